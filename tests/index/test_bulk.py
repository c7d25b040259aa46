"""index/bulk.py: a batch's rows in one statement store what SQLAlchemy's ORM stores, and
hand back their keys in the rows' order (SQLite, then Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

import index.bulk as bulk
from index.bulk import insert_keyed, insert_rows
from index.stores import Stores
from index.tables import ChangeRow, ItemRow, ItemTagRow
from tests.factories import new_collection

WHEN = datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC)


def item_values(collection_id: int, n: int) -> dict[str, Any]:
    return {
        "collection_id": collection_id,
        "external_id": f"é-{n}",
        "modality": "text",
        "sha256": f"{n:064x}",
        "content_type": "text/plain; charset=utf-8",
        "size_bytes": n,
        "text": None if n % 2 else f"text {n} ✓",
        "meta": {"n": n, "nested": {"list": [1, 2.5, None, "x"]}, "flag": n % 3 == 0},
        "feature": bytes([n % 256]) * 16,
        "vector": b"\x00\x01" * 8,
        "spans": None if n % 2 else [[0.0, 1.5], [1.5, 3.0]],
        "aligner_version": n % 4,
        "created_at": WHEN,
        "updated_at": WHEN,
    }


def stored(stores: Stores, pks: list[int]) -> list[tuple[Any, ...]]:
    columns = [getattr(ItemRow, name) for name in item_values(0, 0) if name != "collection_id"]
    with stores.items.sessions() as session:
        rows = session.execute(select(*columns).where(ItemRow.pk.in_(pks)).order_by(ItemRow.pk))
        return [tuple(row) for row in rows]


def test_rows_are_stored_as_the_orm_stores_them(stores: Stores) -> None:
    row = new_collection(stores)
    values = [item_values(row.id, n) for n in range(1, 6)]
    with stores.items.sessions.begin() as session:
        keys = insert_keyed(session, ItemRow, "pk", values)
    orm = [item_values(row.id, n) for n in range(1, 6)]
    for value in orm:
        value["external_id"] += "-orm"
    with stores.items.sessions.begin() as session:
        rows = [ItemRow(**value) for value in orm]
        session.add_all(rows)
        session.flush()
        orm_keys = [r.pk for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == 5
    ours, theirs = stored(stores, keys), stored(stores, orm_keys)
    assert [r[1:] for r in ours] == [r[1:] for r in theirs]  # all but the id
    assert [r[0] for r in ours] == [r[0].removesuffix("-orm") for r in theirs]
    with stores.items.sessions() as session:  # None went in as JSON null, as the ORM has it
        nulls = select(ItemRow.external_id).where(ItemRow.spans.is_(None))
        assert sorted(session.scalars(nulls)) == []


def test_keys_come_back_in_the_rows_order_across_chunks(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than one statement takes (SQLite): every key, ascending, each its row's."""
    monkeypatch.setattr(bulk, "SQLITE_ROWS", 7)
    row = new_collection(stores)
    changes = [{"collection_id": row.id, "item_pk": 1000 + n, "op": "upsert"} for n in range(50)]
    with stores.items.sessions.begin() as session:
        seqs = insert_keyed(session, ChangeRow, "seq", changes)
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    with stores.items.sessions() as session:
        found = dict(session.execute(select(ChangeRow.seq, ChangeRow.item_pk)).all())
    assert [found[seq] for seq in seqs] == [1000 + n for n in range(50)]


def test_rows_without_keys_go_in_whole(stores: Stores) -> None:
    row = new_collection(stores)
    with stores.items.sessions.begin() as session:
        [pk] = insert_keyed(session, ItemRow, "pk", [item_values(row.id, 2)])
        tags = [
            {"item_pk": pk, "key": f"k{n}", "value": f'"{n}"', "collection_id": row.id}
            for n in range(30)
        ]
        insert_rows(session, ItemTagRow, tags)
        insert_rows(session, ItemTagRow, [])
    with stores.items.sessions() as session:
        found = session.execute(select(ItemTagRow.key, ItemTagRow.value)).all()
    assert sorted(found) == sorted((t["key"], t["value"]) for t in tags)


def test_a_value_too_long_for_its_column_is_refused_not_cut(stores: Stores) -> None:
    """Postgres checks a column's length: a longer value is an error, as with the ORM (an
    array cast to VARCHAR(255)[] would have cut it short). SQLite checks no length."""
    row = new_collection(stores)
    value = {**item_values(row.id, 1), "content_type": "x" * 300}
    if stores.items.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="too long"), stores.items.sessions.begin() as s:
            insert_keyed(s, ItemRow, "pk", [value])
        return
    with stores.items.sessions.begin() as session:
        [pk] = insert_keyed(session, ItemRow, "pk", [value])
    with stores.items.sessions() as session:
        assert session.get(ItemRow, pk).content_type == "x" * 300  # type: ignore[union-attr]
