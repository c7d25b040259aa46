"""Aligner versions on SQLite and Postgres: numbered per collection, one named active."""

from __future__ import annotations

import numpy as np

from index.stores import Stores
from models.encoders.aligner import Aligner, AlignerHead
from tests.factories import new_collection


def test_aligner_versions_are_numbered_per_collection(stores: Stores) -> None:
    aligners, collections = stores.aligners, stores.collections
    row = new_collection(stores)
    other = new_collection(stores, "d")
    assert row.aligner_version == 1
    first = aligners.get(collection_id=row.id, version=1)
    assert first is not None and Aligner.from_bytes(first.artefact).encoders["text"] == "m"
    head = AlignerHead.linear(np.eye(4, dtype=np.float32) * 2)
    bigger = Aligner(4, {"text": head}, {"text": "m"}, {"kind": "test"})
    added = aligners.add(
        collection_id=row.id, artefact=bigger.to_bytes(), meta=bigger.meta, activate=False
    )
    assert added.version == 2 and added.sha256 == bigger.sha256
    assert collections.get("c").aligner_version == 1  # recorded, not active
    aligners.add(collection_id=row.id, artefact=bigger.to_bytes(), meta={}, activate=True)
    assert collections.get("c").aligner_version == 3
    assert [a.version for a in aligners.list(row.id)] == [1, 2, 3]
    assert [a.version for a in aligners.list(other.id)] == [1]
    assert aligners.get(collection_id=row.id, version=0) is None
    collections.delete(row.id)
    assert aligners.list(row.id) == []
