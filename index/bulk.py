"""Many rows in one statement whose text does not depend on how many rows there are.

SQLAlchemy writes a batch as one multi-row ``INSERT ... VALUES (...), (...) RETURNING``. On
Postgres a batch of 64 items is a statement of about 900 parameters: psycopg parses its text
again for every batch (its cache takes statements of at most 50 parameters) and the server
parses and plans it again. There, rows go in as one array per column (``INSERT ... SELECT *
FROM unnest(...)``): a statement of a dozen parameters, cached by psycopg and prepared by the
server after a few uses, whatever the batch's size; the keys are drawn from the table's
sequence first, in one query of their own. (psycopg's ``executemany`` was tried too: one
insert per row cost more on both sides. docs/performance.md has the figures.) SQLite keeps
the multi-row statement: its driver caches statements by text, and it has no sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam, func, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session


def insert_keyed(
    session: Session, entity: type[Any], key: str, values: Sequence[dict[str, Any]]
) -> list[int]:
    """Insert rows of ``entity`` (a mapped class; ``values`` by attribute name, the same
    attributes in every row, without the generated ``key``) and return their keys in the
    order of ``values``: ascending, drawn in the calling transaction."""
    if not values:
        return []
    if session.get_bind().dialect.name != "postgresql":
        stmt = insert(entity).returning(getattr(entity, key), sort_by_parameter_order=True)
        return [int(k) for k in session.execute(stmt, list(values)).scalars().all()]
    table = entity.__table__
    sequence = func.pg_get_serial_sequence(table.name, table.c[key].name)
    drawn = session.scalars(
        select(func.nextval(sequence)).select_from(func.generate_series(1, len(values)))
    ).all()
    keys = sorted(int(k) for k in drawn)
    _insert_columns(session, entity, [{key: k, **v} for k, v in zip(keys, values, strict=True)])
    return keys


def insert_rows(session: Session, entity: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows of ``entity`` (``rows`` by attribute name, the same attributes in each)."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(entity), list(rows))
        return
    _insert_columns(session, entity, rows)


def _insert_columns(session: Session, entity: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Postgres: ``INSERT INTO t (a, b) SELECT * FROM unnest(%(a)s::T[], %(b)s::U[])``, each
    column's values converted as SQLAlchemy converts them for a single row."""
    connection = session.connection()
    dialect = connection.dialect
    mapper = entity.__mapper__
    names, casts, params = [], [], {}
    for n, attribute in enumerate(rows[0]):
        column = mapper.attrs[attribute].columns[0]
        kind = column.type.dialect_impl(dialect)
        convert = kind.bind_processor(dialect)
        column_values = [row[attribute] for row in rows]
        params[f"c{n}"] = column_values if convert is None else list(map(convert, column_values))
        names.append(dialect.identifier_preparer.quote(column.name))
        casts.append(f"%(c{n})b::{kind.compile(dialect=dialect)}[]")
    table = dialect.identifier_preparer.format_table(entity.__table__)
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM unnest({', '.join(casts)})",
        params,
    )


def one_of(
    session: Session, column: InstrumentedAttribute[str], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column IN (values)``; on Postgres ``column = ANY(array)``: one parameter, so that the
    statement's text is the same for any number of values and psycopg's cache holds it."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(values))
    return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
