"""Items on SQLite and Postgres: races end in clear errors; recordings keep their segments."""

from __future__ import annotations

import dataclasses
import random
import threading

import numpy as np
import pytest
from sqlalchemy import func, select

from index.columns import canonical, from_blob, from_features
from index.errors import NotFoundError
from index.items import ItemDraft
from index.stores import Stores
from index.tables import ChangeRow
from tests.factories import item_draft, new_collection


def test_writing_into_a_deleted_collection_is_not_found(stores: Stores) -> None:
    row = new_collection(stores)
    stores.collections.delete(row.id)
    with pytest.raises(NotFoundError):
        stores.items.upsert(collection_id=row.id, draft=item_draft("late"))
    with pytest.raises(NotFoundError):
        stores.collections.get("c")


def test_a_recording_keeps_one_vector_per_segment(stores: Stores) -> None:
    row = new_collection(stores)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    spans = [[0.0, 10.0], [5.0, 15.0], [10.0, 20.0]]
    long = ItemDraft(
        external_id="long",
        modality="audio",
        sha256="1" * 64,
        content_type="audio/wav",
        size_bytes=1,
        feature=np.zeros((3, 6), np.float32),  # the raw width is the encoder's, not the space's
        vector=vectors,
        aligner_version=1,
        spans=spans,
    )
    done = stores.items.upsert(collection_id=row.id, draft=long)
    stores.items.upsert(collection_id=row.id, draft=item_draft("short"))
    assert done.row.spans == spans
    stored = stores.items.get(collection_id=row.id, external_id="long")
    assert from_features(stored.feature).shape == (3, 6)
    (chunk,) = list(stores.items.iter_stored(collection_id=row.id))
    assert [s.pk for s in chunk] == [done.row.pk, done.row.pk + 1]
    assert [len(from_blob(s.vector, 4)) for s in chunk] == [3, 1]
    np.testing.assert_array_equal(from_blob(chunk[0].vector, 4), vectors)
    assert chunk[0].modality == "audio" and chunk[0].aligner_version == 1


def test_stored_vectors_of_more_keys_than_a_statement_may_bind(stores: Stores) -> None:
    # A replay after a long outage touches many keys: SQLite binds at most 32,766 values,
    # Postgres 65,535, so the keys go in chunks.
    row = new_collection(stores)
    stores.items.upsert(collection_id=row.id, draft=item_draft("a"))
    stores.items.upsert(collection_id=row.id, draft=item_draft("b"))
    keys = list(range(1, 70_001))
    found = [
        s.pk for chunk in stores.items.iter_stored(collection_id=row.id, pks=keys) for s in chunk
    ]
    assert len(found) == 2


def test_writers_on_separate_connections_racing_on_the_same_ids_all_succeed(
    stores: Stores,
) -> None:
    """What several processes on one database do (``mmr serve --workers``, replicas): writers
    with no lock in common upsert, delete and retag the same few ids at once. Each write ends as a
    success or, for a delete that finds nothing, NotFoundError; none fails on a race (on
    SQLite a transaction that read before writing lost it to another writer's commit)."""
    row = new_collection(stores)
    failures: list[BaseException] = []
    done: list[int] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(60):
            external_id = f"i{rng.randrange(4)}"
            try:
                if n % 4 == 3:  # logs no change
                    stores.items.set_metadata(
                        collection_id=row.id, external_id=external_id, metadata={"n": n}
                    )
                    continue
                if n % 4 == 2:
                    stores.items.delete(collection_id=row.id, external_id=external_id)
                else:
                    stores.items.upsert(collection_id=row.id, draft=item_draft(external_id))
                done.append(n)
            except NotFoundError:
                pass
            except Exception as exc:  # every other failure is the bug
                failures.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    with stores.sessions() as session:  # one change logged per write that succeeded
        logged = session.scalar(select(func.count()).where(ChangeRow.collection_id == row.id))
    assert logged == len(done)


def test_a_batch_writes_in_one_transaction_as_single_writes_would(stores: Stores) -> None:
    row = new_collection(stores)
    stores.items.upsert(collection_id=row.id, draft=item_draft("old", {"colour": "red"}))
    first = dataclasses.replace(item_draft("dup", {"n": 1}), sha256="1" * 64)
    drafts = [
        item_draft("new", {"colour": "blue"}),
        item_draft("old", {"colour": "green"}),
        first,
        item_draft("dup", {"n": 2}),  # a later draft of an id replaces the earlier one
    ]
    done = stores.items.upsert_many(collection_id=row.id, drafts=drafts)
    assert [(d.row.external_id, d.created) for d in done] == [
        ("new", True),
        ("old", False),
        ("dup", True),
        ("dup", False),
    ]
    assert done[3].replaced_sha == "1" * 64 and done[1].replaced_sha == "0" * 64
    seqs = [d.seq for d in done]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4  # one change each, in order
    live = stores.items.page(collection_id=row.id, after_pk=0, limit=10)
    assert sorted(r.external_id for r in live) == ["dup", "new", "old"]
    tags = dict(stores.items.tagged(collection_id=row.id, key="colour"))
    pks = stores.items.pks_of(collection_id=row.id, external_ids=["new", "old"])
    assert tags == {pks["new"]: canonical("blue"), pks["old"]: canonical("green")}  # not red
    assert dict(stores.items.tagged(collection_id=row.id, key="n")) == {
        done[3].row.pk: canonical(2)
    }


def test_a_batch_into_a_deleted_collection_writes_nothing(stores: Stores) -> None:
    row = new_collection(stores)
    stores.collections.delete(row.id)
    with pytest.raises(NotFoundError):
        stores.items.upsert_many(collection_id=row.id, drafts=[item_draft("a"), item_draft("b")])
