"""A batch's rows in one statement whose text the drivers' statement caches hold.

SQLAlchemy's ORM insert of many rows with their keys back (``RETURNING``) ran one statement
a row on SQLite, and on Postgres built one multi-row ``VALUES`` statement of about 900
parameters for 64 items, which psycopg parses again for every batch (its cache takes
statements of at most 50 parameters) and the server parses and plans again. Here:

- **SQLite**: one ``INSERT ... VALUES (...), (...) RETURNING`` a chunk of rows, in the
  driver's own parameter style; its text depends only on the batch's size, and the driver
  caches it.
- **Postgres**: one array per column (``INSERT ... SELECT ... FROM unnest(...) ... RETURNING``,
  binary parameters): a dozen parameters, cached by psycopg and prepared by the server,
  whatever the batch's size. (psycopg's ``executemany``, one insert a row in a pipeline,
  cost more on both sides; drawing the keys from the sequence in a query of their own cost
  single writes a round trip.)

Values are converted by each column type's own bind processor for the dialect, as
SQLAlchemy converts them for one row, so what is stored is the same either way.
docs/performance.md has the figures.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Dialect, String, any_, bindparam, insert
from sqlalchemy.orm import InstrumentedAttribute, Session

# SQLite: rows a statement (as SQLAlchemy's own batches), and its bound on a statement's
# variables (32,766 since SQLite 3.32, 999 before).
SQLITE_ROWS = 1000
SQLITE_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def insert_keyed(
    session: Session, entity: type[Any], key: str, values: Sequence[dict[str, Any]]
) -> list[int]:
    """Insert rows of ``entity`` (a mapped class; ``values`` by attribute name, the same
    attributes in every row, without the generated ``key``) and return their keys in the
    order of ``values``: ascending, drawn in the calling transaction."""
    if not values:
        return []
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        return _insert_returning(session, entity, key, values)
    if dialect.name != "postgresql":
        stmt = insert(entity).returning(getattr(entity, key), sort_by_parameter_order=True)
        return [int(k) for k in session.execute(stmt, list(values)).scalars().all()]
    return _insert_columns(session, entity, values, key)


def insert_rows(session: Session, entity: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows of ``entity`` (``rows`` by attribute name, the same attributes in each)."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(entity), list(rows))
        return
    _insert_columns(session, entity, rows, None)


def _insert_returning(
    session: Session, entity: type[Any], key: str, values: Sequence[dict[str, Any]]
) -> list[int]:
    """SQLite: ``INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ... RETURNING key``, a chunk of
    rows a statement. SQLite gives rowids in the order of the VALUES, ascending (its
    ``AUTOINCREMENT`` never reuses one), so the sorted keys are the rows' in order."""
    connection = session.connection()
    names, _, columns = _converted(connection.dialect, entity, values)
    table = connection.dialect.identifier_preparer.format_table(entity.__table__)
    returned = connection.dialect.identifier_preparer.quote(entity.__table__.c[key].name)
    width = len(names)
    chunk = max(1, min(SQLITE_ROWS, SQLITE_VARIABLES // width))
    keys: list[int] = []
    rows = list(zip(*columns, strict=True))
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([one] * len(part))} "
            f"RETURNING {returned}"
        )
        flat = tuple(value for row in part for value in row)
        keys.extend(sorted(int(k) for (k,) in connection.exec_driver_sql(sql, flat)))
    return keys


def _converted(
    dialect: Dialect, entity: type[Any], rows: Sequence[dict[str, Any]]
) -> tuple[list[str], list[Any], list[list[Any]]]:
    """The rows' column names (quoted), the columns' types for the dialect, and each column's
    values, converted as SQLAlchemy converts them for one row (the type's bind processor)."""
    mapper = entity.__mapper__
    names, kinds, columns = [], [], []
    for attribute in rows[0]:
        column = mapper.attrs[attribute].columns[0]
        kind = column.type.dialect_impl(dialect)
        convert = kind.bind_processor(dialect)
        values = [row[attribute] for row in rows]
        if convert is not None:
            values = _each_converted(convert, values)
        columns.append(values)
        names.append(dialect.identifier_preparer.quote(column.name))
        kinds.append(kind)
    return names, kinds, columns


def _each_converted(convert: Any, values: list[Any]) -> list[Any]:
    """Each value converted; one object given for every row (a batch's time, its
    collection) is converted once (SQLite's DATETIME formats a string each time)."""
    first = values[0]
    if all(value is first for value in values):
        return [convert(first)] * len(values)
    return list(map(convert, values))


def _insert_columns(
    session: Session, entity: type[Any], rows: Sequence[dict[str, Any]], key: str | None
) -> list[int]:
    """Postgres: ``INSERT INTO t (a, b) SELECT a, b FROM unnest(%(a)b::T[], %(b)b::U[])
    WITH ORDINALITY AS u(a, b, n) ORDER BY n [RETURNING key]``, each column's values
    converted as SQLAlchemy converts them for one row. Rows are inserted in the order the
    ``SELECT`` gives, and a serial key is drawn as each row is: ascending in the rows' order
    (what SQLAlchemy's own ordered ``RETURNING`` relies on, for the same statement shape)."""
    connection = session.connection()
    dialect = connection.dialect
    names, kinds, columns = _converted(dialect, entity, rows)
    casts, params = [], {}
    for n, (kind, values) in enumerate(zip(kinds, columns, strict=True)):
        params[f"c{n}"] = values
        # The unbounded type: VARCHAR(255)[] would cut a longer value short, where the
        # column itself refuses it ("value too long"), as the ORM's insert did.
        unbounded = re.sub(r"\(\d+\)$", "", kind.compile(dialect=dialect))
        casts.append(f"%(c{n})b::{unbounded}[]")
    quote = dialect.identifier_preparer.quote
    table = dialect.identifier_preparer.format_table(entity.__table__)
    aliases = [f"c{n}" for n in range(len(names))]
    sql = (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(aliases)} "
        f"FROM unnest({', '.join(casts)}) WITH ORDINALITY AS u({', '.join(aliases)}, n) "
        "ORDER BY n"
    )
    if key is None:
        connection.exec_driver_sql(sql, params)
        return []
    returned = quote(entity.__table__.c[key].name)
    found = connection.exec_driver_sql(f"{sql} RETURNING {returned}", params)
    return sorted(int(k) for (k,) in found)


def one_of(
    session: Session, column: InstrumentedAttribute[str], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column IN (values)``; on Postgres ``column = ANY(array)``: one parameter, so that the
    statement's text is the same for any number of values and psycopg's cache holds it."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(values))
    return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
