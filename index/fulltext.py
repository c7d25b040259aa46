"""Lexical search: the full-text index of items' text and metadata values, in SQL.

The index is derived state kept by the database itself (migration 0008): on SQLite an FTS5
table filled by triggers on ``items``, on Postgres a GIN index on the generated column
``items.fulltext`` (``mmr_fulltext(text, metadata)``). Either way it changes in the
transaction that writes the item, so every process over the database sees it at once and
``kill -9`` cannot part it from the items; ``rebuild`` makes it again from the item rows.

A query's words never reach the engine as syntax: the text is cut at white space into at
most ``MAX_TERMS`` terms, each searched as a phrase of its own tokens (so "XJ-9000" is the
phrase "xj 9000" on SQLite, "xj <-> -9000" on Postgres, as the index tokenised the
item), and an item matches any term (OR), ranked by the sum of the matched terms' idf in
the collection, plus a rank under 1 (``ts_rank`` on Postgres, the text's length on SQLite).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Float,
    String,
    bindparam,
    case,
    desc,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session

from index.tables import ItemRow

MAX_TERMS = 32  # terms a query searches (the first ones); more are left out
MAX_TERM_CHARS = 64  # a longer "word" is cut: no phrase of hundreds of tokens

_FTS = table("items_fts")


def terms_of(query: str) -> list[str]:
    """The terms a query searches: its words (separated by white space and by every
    character of Unicode's categories C and Z) that hold a letter or a digit, each cut to
    MAX_TERM_CHARS, at most MAX_TERMS of them, without repeats."""
    terms: dict[str, None] = {}
    # Not printable = categories C (control, format, private, unassigned, surrogate) and Z
    # (separators): NUL ends a string for FTS5's query parser and Postgres refuses it, a
    # lone surrogate cannot be encoded for either database, and the tokenisers split at
    # the others anyway.
    printable = "".join(ch if ch.isprintable() else " " for ch in query)
    for word in printable.split():
        if len(terms) >= MAX_TERMS:
            break
        cut = word[:MAX_TERM_CHARS]
        if any(ch.isalnum() for ch in cut):
            terms.setdefault(cut, None)
    return list(terms)


def relevance_to_score(relevance: float) -> float:
    """The engine's relevance (0 and up) as a score in [0, 1): r / (1 + r)."""
    r = max(0.0, float(relevance))
    return r / (1.0 + r)


def search(
    session: Session,
    *,
    query: str,
    collection_id: int,
    conditions: Sequence[ColumnElement[bool]],
    limit: int,
) -> list[tuple[int, float]]:
    """The collection's items that match the query's terms and ``conditions`` (on
    ``items``), best first, at most ``limit``: (item key, score in [0, 1)). Nothing when no
    term is left."""
    terms = terms_of(query)
    if not terms or limit < 1:
        return []
    if session.get_bind().dialect.name == "postgresql":
        stmt, params = _postgres(terms, _idf(session, collection_id, terms))
    else:
        stmt, params = _sqlite(terms, collection_id, _idf(session, collection_id, terms))
    stmt = stmt.where(*conditions).limit(limit)
    rows = session.execute(stmt, params).all()
    return [(int(pk), relevance_to_score(r)) for pk, r in rows]


def specificity(session: Session, *, query: str, collection_id: int) -> float:
    """How specific the query's rarest word is in the collection, in [0, 1]: the largest
    idf of the query's terms that at least one of the collection's items holds, over the
    idf of a term that exactly one item holds (the most an idf can be). 1 for a product
    code only one item has, near 0 for words most items have; 0 when no term is held."""
    terms = terms_of(query)
    if not terms:
        return 0.0
    size, counts = _counts(session, collection_id, terms)
    held = [_bm25_idf(size, n) for n in counts if n > 0]
    if not held:
        return 0.0
    most = _bm25_idf(size, 1)
    return min(1.0, max(held) / most) if most > 0 else 1.0


def _bm25_idf(size: int, n: int) -> float:
    """ln(1 + (N - n + 0.5) / (n + 0.5)): BM25's idf of a term n of N items hold (never
    below 0)."""
    return math.log(1 + max(0.0, size - n + 0.5) / (n + 0.5))


def _sqlite_match(collection_id: int, terms: list[str]) -> str:
    """An FTS5 query: the collection's token, and any of the terms in text or metadata."""
    # A phrase in double quotes is only ever tokens (a quote inside is doubled): no
    # operator, column filter, prefix or NEAR the user typed reaches FTS5 as syntax.
    phrases = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    return f'coll : "c{collection_id}" AND {{text meta}} : ({phrases})'


def _fts_rowids(param: str) -> Any:
    """The rows of items_fts that the FTS5 query bound to ``param`` matches."""
    match = text(f"items_fts MATCH :{param}")
    return select(literal_column("rowid")).select_from(_FTS).where(match)


def _sqlite(terms: list[str], collection_id: int, idf: list[float]) -> tuple[Any, dict[str, Any]]:
    """The sum of the idf (in the collection) of the terms an item holds, plus 1 / (2 +
    characters / 100) of its text: of two items holding the same terms, the shorter first.
    FTS5's own bm25() counts every collection's rows (its idf and mean length would let one
    tenant's items move another's scores); its term counts, through highlight(), cost six
    times the search on 20,000 matches."""
    rowid: ColumnElement[Any] = literal_column("items_fts.rowid")
    weights: list[ColumnElement[Any]] = [
        case(
            (rowid.in_(_fts_rowids(f"m{n}")), bindparam(f"w{n}", type_=Float)),
            else_=0.0,
        )
        for n in range(len(terms))
    ]
    rank: ColumnElement[Any] = literal_column(
        "1.0 / (2.0 + length(coalesce(items.text, '')) / 100.0)"
    )
    relevance = functools.reduce(lambda a, b: a + b, weights, rank).label("relevance")
    stmt = (
        select(ItemRow.pk, relevance)
        .select_from(_FTS.join(ItemRow.__table__, text("items.pk = items_fts.rowid")))
        .where(text("items_fts MATCH :match"))
        .order_by(desc("relevance"), ItemRow.pk)
    )
    params: dict[str, Any] = {"match": _sqlite_match(collection_id, terms)}
    params |= {f"m{n}": _sqlite_match(collection_id, [term]) for n, term in enumerate(terms)}
    params |= {f"w{n}": weight for n, weight in enumerate(idf)}
    return stmt, params


def _phrase(n: int) -> ColumnElement[Any]:
    # The text is a bound value, parsed as words, never as tsquery syntax.
    simple: ColumnElement[Any] = literal_column("'simple'::regconfig")
    return func.phraseto_tsquery(simple, bindparam(f"t{n}", type_=String))


def _document() -> ColumnElement[Any]:
    """The generated tsvector column the GIN index is built on (migration 0008)."""
    return literal_column("items.fulltext")


def _idf(session: Session, collection_id: int, terms: list[str]) -> list[float]:
    """Each term's inverse document frequency in the collection, as BM25 weighs it:
    ln(1 + (N - n + 0.5) / (n + 0.5)), n the collection's items holding the term (Postgres'
    ts_rank knows no document frequency, so a rare product code would count no more than
    "the"; SQLite's bm25() counts every collection's items)."""
    size, counts = _counts(session, collection_id, terms)
    return [_bm25_idf(size, n) for n in counts]


def _counts(session: Session, collection_id: int, terms: list[str]) -> tuple[int, list[int]]:
    """The collection's item count, and how many of its items hold each term."""
    mine = ItemRow.collection_id == collection_id
    params: dict[str, Any]
    if session.get_bind().dialect.name == "postgresql":
        counts = [
            select(func.count()).where(mine, _document().op("@@")(_phrase(n))).scalar_subquery()
            for n in range(len(terms))
        ]
        params = {f"t{n}": term for n, term in enumerate(terms)}
    else:
        counts = [
            select(func.count()).select_from(_fts_rowids(f"m{n}").subquery()).scalar_subquery()
            for n in range(len(terms))
        ]
        params = {f"m{n}": _sqlite_match(collection_id, [t]) for n, t in enumerate(terms)}
    total = select(func.count()).where(mine).scalar_subquery()
    found = session.execute(select(total, *counts), params).one()
    return int(found[0]), [int(n) for n in found[1:]]


def _postgres(terms: list[str], idf: list[float]) -> tuple[Any, dict[str, Any]]:
    """The sum of the idf of the terms an item holds, plus ts_rank (under 1: term counts
    and length, normalisation 1 dividing by 1 + log(length)), on SQLite's scale."""
    document = _document()
    phrases = [_phrase(n) for n in range(len(terms))]
    query = functools.reduce(lambda a, b: a.op("||")(b), phrases)
    rank: ColumnElement[Any] = func.ts_rank(document, query, 1)
    weights: list[ColumnElement[Any]] = [
        case((document.op("@@")(phrase), bindparam(f"w{n}", type_=Float)), else_=0.0)
        for n, phrase in enumerate(phrases)
    ]
    relevance = functools.reduce(lambda a, b: a + b, weights, rank).label("relevance")
    stmt = (
        select(ItemRow.pk, relevance)
        .where(document.op("@@")(query))
        .order_by(desc("relevance"), ItemRow.pk)
    )
    params: dict[str, Any] = {f"t{n}": term for n, term in enumerate(terms)}
    params |= {f"w{n}": weight for n, weight in enumerate(idf)}
    return stmt, params


def rebuild(engine: Engine) -> None:
    """Make the full-text index again from the item rows (it can always be: the rows are
    the truth). SQLite: FTS5's own ``rebuild`` is for tables that read their content from
    another; this one keeps its own, so it is emptied and filled again. Postgres: every row's
    generated column computed again (an UPDATE does), then the GIN index rebuilt."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("UPDATE items SET text = text")
            conn.exec_driver_sql("REINDEX INDEX ix_items_fulltext")
            return
        meta = (
            "(SELECT group_concat(value, ' ') FROM json_tree(items.metadata) "
            "WHERE type IN ('text', 'integer', 'real'))"
        )
        conn.exec_driver_sql("DELETE FROM items_fts")
        conn.exec_driver_sql(
            "INSERT INTO items_fts (rowid, text, meta, coll) "
            f"SELECT pk, text, {meta}, 'c' || collection_id FROM items"
        )
