"""The change log on SQLite and Postgres: every item write is logged; pruning keeps the newest
sequence."""

from __future__ import annotations

import pytest

from index.errors import ConflictError
from index.stores import Stores
from tests.factories import item_draft, new_collection


def test_every_write_is_logged(stores: Stores) -> None:
    row = new_collection(stores)
    with pytest.raises(ConflictError):
        new_collection(stores)
    items, changes = stores.items, stores.changes
    first = items.upsert(collection_id=row.id, draft=item_draft("a", {"k": [1, "x"]}))
    assert first.created and first.replaced_sha is None
    again = items.upsert(collection_id=row.id, draft=item_draft("a"))
    assert not again.created and again.replaced_sha == "0" * 64
    a = again.row
    items.upsert(collection_id=row.id, draft=item_draft("b", {"k": 1}))
    items.delete(collection_id=row.id, external_id="b")
    touched, newest = changes.since(collection_id=row.id, seq=0)
    assert newest == changes.last_seq(row.id) and newest >= 4
    assert a.pk in touched and len(touched) == 2
    assert changes.since(collection_id=row.id, seq=newest) == (set(), newest)
    assert items.matching_pks(collection_id=row.id, modalities=None, filters={"k": 1}).size == 0


def test_pruning_keeps_the_newest_sequence(stores: Stores) -> None:
    row = new_collection(stores)
    stores.items.upsert(collection_id=row.id, draft=item_draft("a"))
    seq = stores.changes.last_seq(row.id)
    stores.changes.prune(collection_id=row.id, upto_seq=seq)
    assert stores.changes.since(collection_id=row.id, seq=0) == (set(), 0)
    assert stores.changes.last_seq(row.id) == seq
    assert stores.collections.get("c").changes_pruned_seq == seq
