"""Items on SQLite and Postgres: races end in clear errors; recordings keep their segments."""

from __future__ import annotations

import numpy as np
import pytest

from index.columns import from_blob
from index.errors import NotFoundError
from index.items import ItemDraft
from index.stores import Stores
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
    assert from_blob(done.row.feature, 6).shape == (3, 6)
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
