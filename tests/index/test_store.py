"""The SQL store on SQLite and Postgres: writes log changes; races end in clear errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import text

from index.db import make_engine, make_sessionmaker, migrate
from index.errors import ConflictError, NotFoundError
from index.store import ItemDraft, MetadataStore


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
    row = store.create_collection(name="c", model="m", dim=4, index_type="flat", index_params={})
    with pytest.raises(ConflictError):
        store.create_collection(name="c", model="m", dim=4, index_type="flat", index_params={})
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
    row = store.create_collection(name="c", model="m", dim=4, index_type="flat", index_params={})
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
    row = store.create_collection(name="c", model="m", dim=4, index_type="flat", index_params={})
    store.upsert_item(collection_id=row.id, draft=draft("a"))
    seq = store.last_seq(row.id)
    store.prune_changes(collection_id=row.id, upto_seq=seq)
    assert store.changed_since(collection_id=row.id, seq=0) == (set(), 0)
    assert store.last_seq(row.id) == seq
    assert store.get_collection("c").changes_pruned_seq == seq
