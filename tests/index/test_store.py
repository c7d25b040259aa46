"""The SQL store on SQLite and Postgres: writes log changes; races end in clear errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import text

from index.db import make_engine, make_sessionmaker, migrate
from index.errors import ConflictError, NotFoundError
from index.store import ItemDraft, MetadataStore, from_blob
from index.tables import CollectionRow
from models.encoders.aligner import Aligner, AlignerHead


def new_collection(store: MetadataStore, name: str = "c") -> CollectionRow:
    """A 4-dimensional collection whose first aligner is the identity."""
    aligner = Aligner.identity(4, {"image": "m", "text": "m"})
    return store.create_collection(
        name=name,
        model="m",
        audio_model=None,
        dim=4,
        index_type="flat",
        index_params={},
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )


@pytest.fixture
def store(database_url: str) -> Iterator[MetadataStore]:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: a second start finds the schema current
    yield MetadataStore(make_sessionmaker(engine))
    engine.dispose()


def draft(external_id: str, metadata: dict | None = None) -> ItemDraft:  # type: ignore[type-arg]
    vector = np.ones(4, dtype=np.float32) / 2
    return ItemDraft(
        external_id=external_id,
        modality="text",
        sha256="0" * 64,
        content_type="text/plain",
        size_bytes=1,
        feature=vector,
        vector=vector,
        aligner_version=0,
        text="x",
        metadata=metadata or {},
    )


def test_every_write_is_logged(store: MetadataStore) -> None:
    row = new_collection(store)
    with pytest.raises(ConflictError):
        new_collection(store)
    first = store.upsert_item(collection_id=row.id, draft=draft("a", {"k": [1, "x"]}))
    assert first.created and first.replaced_sha is None
    again = store.upsert_item(collection_id=row.id, draft=draft("a"))
    assert not again.created and again.replaced_sha == "0" * 64
    a = again.row
    store.upsert_item(collection_id=row.id, draft=draft("b", {"k": 1}))
    store.delete_item(collection_id=row.id, external_id="b")
    touched, newest = store.changed_since(collection_id=row.id, seq=0)
    assert newest == store.last_seq(row.id) and newest >= 4
    assert a.pk in touched and len(touched) == 2
    assert store.changed_since(collection_id=row.id, seq=newest) == (set(), newest)
    assert store.matching_pks(collection_id=row.id, modalities=None, filters={"k": 1}).size == 0


def test_writing_into_a_deleted_collection_is_not_found(store: MetadataStore) -> None:
    row = new_collection(store)
    store.delete_collection(row.id)
    with pytest.raises(NotFoundError):
        store.upsert_item(collection_id=row.id, draft=draft("late"))
    with pytest.raises(NotFoundError):
        store.get_collection("c")


def test_migrations_upgrade_a_populated_database(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO collections (name, model, dim, aligner_version, index_type,"
                    " index_params, created_at) VALUES ('old', 'm', 4, 0, 'flat', '{}',"
                    " CURRENT_TIMESTAMP)"
                )
            )
        migrate(engine)
        row = MetadataStore(make_sessionmaker(engine)).get_collection("old")
        assert row.changes_pruned_seq == 0
    finally:
        engine.dispose()


def test_pruning_keeps_the_newest_sequence(store: MetadataStore) -> None:
    row = new_collection(store)
    store.upsert_item(collection_id=row.id, draft=draft("a"))
    seq = store.last_seq(row.id)
    store.prune_changes(collection_id=row.id, upto_seq=seq)
    assert store.changed_since(collection_id=row.id, seq=0) == (set(), 0)
    assert store.last_seq(row.id) == seq
    assert store.get_collection("c").changes_pruned_seq == seq


def test_aligner_versions_are_numbered_per_collection(store: MetadataStore) -> None:
    row = new_collection(store)
    other = new_collection(store, "d")
    assert row.aligner_version == 1
    first = store.get_aligner(collection_id=row.id, version=1)
    assert first is not None and Aligner.from_bytes(first.artefact).encoders["text"] == "m"
    head = AlignerHead.linear(np.eye(4, dtype=np.float32) * 2)
    bigger = Aligner(4, {"text": head}, {"text": "m"}, {"kind": "test"})
    added = store.add_aligner(
        collection_id=row.id, artefact=bigger.to_bytes(), meta=bigger.meta, activate=False
    )
    assert added.version == 2 and added.sha256 == bigger.sha256
    assert store.get_collection("c").aligner_version == 1  # recorded, not active
    store.add_aligner(collection_id=row.id, artefact=bigger.to_bytes(), meta={}, activate=True)
    assert store.get_collection("c").aligner_version == 3
    assert [a.version for a in store.list_aligners(row.id)] == [1, 2, 3]
    assert [a.version for a in store.list_aligners(other.id)] == [1]
    assert store.get_aligner(collection_id=row.id, version=0) is None
    store.delete_collection(row.id)
    assert store.list_aligners(row.id) == []


def test_a_recording_keeps_one_vector_per_segment(store: MetadataStore) -> None:
    row = new_collection(store)
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
    done = store.upsert_item(collection_id=row.id, draft=long)
    store.upsert_item(collection_id=row.id, draft=draft("short"))
    assert done.row.spans == spans
    assert from_blob(done.row.feature, 6).shape == (3, 6)
    (chunk,) = list(store.iter_stored(collection_id=row.id))
    assert [s.pk for s in chunk] == [done.row.pk, done.row.pk + 1]
    assert [len(from_blob(s.vector, 4)) for s in chunk] == [3, 1]
    np.testing.assert_array_equal(from_blob(chunk[0].vector, 4), vectors)
    assert chunk[0].modality == "audio" and chunk[0].aligner_version == 1


def test_stored_vectors_of_more_keys_than_a_statement_may_bind(store: MetadataStore) -> None:
    # A replay after a long outage touches many keys: SQLite binds at most 32,766 values,
    # Postgres 65,535, so the keys go in chunks.
    row = new_collection(store)
    store.upsert_item(collection_id=row.id, draft=draft("a"))
    store.upsert_item(collection_id=row.id, draft=draft("b"))
    keys = list(range(1, 70_001))
    found = [s.pk for chunk in store.iter_stored(collection_id=row.id, pks=keys) for s in chunk]
    assert len(found) == 2


def test_collection_lookups_follow_own_changes_at_once_and_others_within_the_ttl(
    store: MetadataStore,
) -> None:
    row = new_collection(store)
    assert store.get_collection("c").index_epoch == 0
    store.set_space(collection_id=row.id, bump_epoch=True)
    assert store.get_collection("c").index_epoch == 1  # this store's own change: at once
    other = MetadataStore(store.sessions)  # another process (a worker) on the same database
    other.set_space(collection_id=row.id, bump_epoch=True)
    assert store.get_collection("c").index_epoch == 1  # within the TTL: the kept row
    time.sleep(store.collection_ttl_s + 0.05)
    assert store.get_collection("c").index_epoch == 2
    store.delete_collection(row.id)
    with pytest.raises(NotFoundError):
        store.get_collection("c")
