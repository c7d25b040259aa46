"""Items as a search hit shows them, read on the driver itself.

Search hydrates its hits with this on every query, so it goes to the driver with a plain
SELECT: SQLAlchemy's execution and type processing cost a search several times what the
database did (0.8 of 0.9 ms for 10 hits).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine

from index.tables import ItemRow


class ItemSummary(NamedTuple):
    """An item without its feature and vector blobs: what a search hit shows."""

    pk: int
    external_id: str
    modality: str
    meta: dict[str, Any]
    sha256: str
    content_type: str
    size_bytes: int
    text: str | None
    spans: list[list[float]] | None
    created_at: datetime
    updated_at: datetime


def summary_of(row: ItemRow | dict[str, Any], *, pk: int = 0) -> ItemSummary:
    """The summary of an item row, or of a new row's values (by attribute name) and key."""
    if isinstance(row, dict):
        return ItemSummary(pk, *(row[name] for name in ItemSummary._fields[1:]))
    return ItemSummary(*(getattr(row, name) for name in ItemSummary._fields))


# The columns of ItemSummary, in its order ("metadata" is the column behind ``meta``).
_SUMMARY_COLUMNS = ["metadata" if name == "meta" else name for name in ItemSummary._fields]


@functools.lru_cache(maxsize=256)
def _summary_sql(paramstyle: str, count: int) -> str:
    """SELECT of ``count`` items' summaries, in the driver's own parameter style (the two
    drivers the project runs on: sqlite3's ``?``, psycopg's ``%s``)."""
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(paramstyle)
    if mark is None:
        raise ValueError(f"no item hydration for the parameter style {paramstyle!r}")
    columns = ", ".join(_SUMMARY_COLUMNS)
    marks = ", ".join([mark] * count)
    table = ItemRow.__tablename__
    return f"SELECT {columns} FROM {table} WHERE collection_id = {mark} AND pk IN ({marks})"


def _summary(values: Sequence[Any]) -> ItemSummary:
    """A driver's row -> ItemSummary: JSON and timestamps come back as text from SQLite,
    parsed from psycopg (SQLAlchemy's type processing is what this path skips)."""
    pk, ext, modality, meta, sha, ctype, size, text, spans, created, updated = values
    return ItemSummary(
        pk,
        ext,
        modality,
        json.loads(meta) if isinstance(meta, str | bytes) else meta,
        sha,
        ctype,
        size,
        text,
        json.loads(spans) if isinstance(spans, str | bytes) else spans,
        created if isinstance(created, datetime) else datetime.fromisoformat(created),
        updated if isinstance(updated, datetime) else datetime.fromisoformat(updated),
    )


def read_summaries(
    engine: Engine, collection_id: int, pks: Sequence[int]
) -> dict[int, ItemSummary]:
    """Items of a collection by primary key (those still present): every column but the
    feature and vector blobs."""
    if not pks:
        return {}
    sql = _summary_sql(engine.dialect.paramstyle, len(pks))
    driver = engine.raw_connection()
    try:
        cursor = driver.cursor()
        try:
            cursor.execute(sql, (collection_id, *(int(pk) for pk in pks)))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        driver.commit()  # ends the read transaction (psycopg opens one)
    finally:
        driver.close()  # back to the pool
    return {row[0]: _summary(row) for row in rows}
