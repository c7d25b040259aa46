"""The full-text index in SQL (index/fulltext.py, migration 0008): filled for the items a
database already holds, kept by every write path, rebuilt from the rows."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event

from index import fulltext
from index.db import downgrade, make_sessionmaker, migrate
from index.stores import Stores
from tests.factories import item_draft, new_collection

PG_FUNCTION = importlib.import_module("index.migrations.versions.0008_fulltext").PG_FUNCTION


def words(stores: Stores, collection_id: int, query: str) -> list[str]:
    found = stores.items.lexical(
        collection_id=collection_id, query=query, modalities=None, filters=None, limit=100
    )
    names = [f"i{n}" for n in range(10)]
    keys = {
        pk: e
        for e, pk in stores.items.pks_of(collection_id=collection_id, external_ids=names).items()
    }
    return [keys[pk] for pk, _ in found]


def write(stores: Stores, collection_id: int, external_id: str, text: str, **meta: object) -> None:
    draft = dataclasses.replace(item_draft(external_id, dict(meta)), text=text)
    stores.items.upsert(collection_id=collection_id, draft=draft)


def test_the_migration_fills_the_index_for_items_already_stored(engine: Engine) -> None:
    downgrade(engine, "0007")
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    write(stores, row.id, "i0", "an old ZX-81 note", owner="Ada")
    migrate(engine)
    assert words(stores, row.id, "ZX-81") == ["i0"]
    assert words(stores, row.id, "ada") == ["i0"]


def test_every_write_path_keeps_it(engine: Engine) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    drafts = [
        dataclasses.replace(item_draft(f"i{n}", {"n": n}), text=f"batch word{n}") for n in range(3)
    ]
    stores.items.upsert_many(collection_id=row.id, drafts=drafts)
    assert words(stores, row.id, "word1") == ["i1"]
    stores.items.set_metadata(collection_id=row.id, external_id="i1", metadata={"tag": "fresh"})
    assert words(stores, row.id, "fresh") == ["i1"]
    assert words(stores, row.id, "1") == []  # the old metadata value went with it
    stores.items.delete(collection_id=row.id, external_id="i2")
    assert words(stores, row.id, "word2") == []
    stores.collections.delete(row.id)
    again = new_collection(stores)
    assert words(stores, again.id, "batch") == []


def test_rebuild_makes_the_same_index(engine: Engine) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    for n in range(5):
        write(stores, row.id, f"i{n}", f"item {n} of kind{n % 2}", code=f"K-{n}")
    before = [words(stores, row.id, q) for q in ("kind0", "K-3", "item")]
    with engine.begin() as conn:  # the derived state lost
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DELETE FROM items_fts")
        else:  # as an older mmr_fulltext would have left it
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION mmr_fulltext(body text, meta json) RETURNS tsvector "
                "LANGUAGE sql IMMUTABLE AS $$ SELECT ''::tsvector $$"
            )
            conn.exec_driver_sql("UPDATE items SET text = text")
            conn.exec_driver_sql(PG_FUNCTION)
    assert words(stores, row.id, "item") == []
    fulltext.rebuild(engine)
    assert [words(stores, row.id, q) for q in ("kind0", "K-3", "item")] == before
    assert before[0] == ["i0", "i2", "i4"]


HOSTILE = st.lists(
    st.one_of(
        st.characters(),
        st.characters(categories=["C", "Z"]),  # lone surrogates (Cs) too
        st.sampled_from(['"', "*", "(", ")", ":", "^", "-", "<->", "&", "|", "!", "\\", "OR"]),
    ),
    max_size=200,
).map("".join)


@pytest.fixture
def note(engine: Engine) -> tuple[Stores, int]:
    """A collection of one item, "a plain note" (made once for all of hypothesis' examples)."""
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    write(stores, row.id, "i0", "a plain note")
    return stores, row.id


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=HOSTILE)
def test_hostile_text_is_only_words_in_sql(note: tuple[Stores, int], query: str) -> None:
    terms = fulltext.terms_of(query)
    assert len(terms) <= fulltext.MAX_TERMS
    assert all(0 < len(t) <= fulltext.MAX_TERM_CHARS and t.isprintable() for t in terms)
    assert all(any(c.isalnum() for c in t) and " " not in t for t in terms)
    # and the database takes every term as words: no syntax error, no encoding error
    stores, collection_id = note
    assert words(stores, collection_id, "note " + query) == ["i0"]


def test_postgres_uses_the_gin_index(engine: Engine, database_url: str) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres only")
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    drafts = [
        dataclasses.replace(item_draft(f"k{n}"), text=f"note {n} of kind{n % 500}")
        for n in range(3000)
    ]
    stores.items.upsert_many(collection_id=row.id, drafts=drafts)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE items")
    executed: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        executed.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        found = stores.items.lexical(
            collection_id=row.id, query="kind7", modalities=None, filters=None, limit=10
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(found) == 6  # a selective term (6 of 3,000): the planner reads the GIN index
    # the statement fulltext.search built and ran (the last: the idf counts come first)
    statement, parameters = executed[-1]
    assert "relevance" in statement
    with engine.begin() as conn:
        plan = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
    assert "ix_items_fulltext" in " ".join(str(r[0]) for r in plan), plan


def test_among_takes_any_number_of_keys(engine: Engine) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    drafts = [dataclasses.replace(item_draft(f"k{n}"), text=f"common {n}") for n in range(700)]
    stores.items.upsert_many(collection_id=row.id, drafts=drafts)
    names = [d.external_id for d in drafts]
    pks = sorted(stores.items.pks_of(collection_id=row.id, external_ids=names).values())
    found = stores.items.lexical(
        collection_id=row.id, query="common", modalities=None, filters=None, limit=1000, among=pks
    )
    assert sorted(pk for pk, _ in found) == pks
    some = stores.items.lexical(
        collection_id=row.id, query="common", modalities=None, filters=None, limit=5, among=pks
    )
    assert some == found[:5]


def test_another_collection_changes_neither_results_nor_scores(engine: Engine) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    mine = new_collection(stores, "mine")
    for n in range(6):
        write(stores, mine.id, f"i{n}", f"travel kit {n} " + "charger " * (n % 3), code=f"K-{n}")

    def found() -> list[list[tuple[int, float]]]:
        return [
            stores.items.lexical(
                collection_id=mine.id, query=q, modalities=None, filters=None, limit=100
            )
            for q in ("charger", "travel K-3", "kit charger zzz", "k")
        ]

    before = found()
    assert all(before[:3])
    other = new_collection(stores, "other")
    drafts = [
        dataclasses.replace(item_draft(f"o{n}", {"code": "K-3"}), text=f"charger charger {n} k")
        for n in range(50)
    ]
    stores.items.upsert_many(collection_id=other.id, drafts=drafts)
    assert found() == before


def specificity(stores: Stores, collection_id: int, query: str) -> float:
    return stores.items.specificity(collection_id=collection_id, query=query)


def test_specificity_is_the_rarest_held_words_idf_over_the_most_an_idf_can_be(
    engine: Engine,
) -> None:
    stores = Stores.over(make_sessionmaker(engine))
    row = new_collection(stores)
    assert specificity(stores, row.id, "anything") == 0.0  # an empty collection: no NaN
    for n in range(8):
        code = " XJ-4821" if n == 3 else ""
        write(stores, row.id, f"i{n}", f"a red cup{code}" if n < 4 else f"a blue cup {n}")
    other = new_collection(stores, name="other")
    write(stores, other.id, "i0", "XJ-4821 here, and red there")

    def idf(n: int) -> float:
        return math.log(1 + (8 - n + 0.5) / (n + 0.5))

    assert specificity(stores, row.id, "XJ-4821") == 1.0  # one item of eight holds it
    assert specificity(stores, row.id, "red cup XJ-4821") == 1.0  # the rarest decides
    assert specificity(stores, row.id, "red") == pytest.approx(idf(4) / idf(1))
    assert specificity(stores, row.id, "red cup") == pytest.approx(idf(4) / idf(1))
    assert specificity(stores, row.id, "cup") == pytest.approx(idf(8) / idf(1))
    # words no item holds count for nothing: not the highest idf of all
    assert specificity(stores, row.id, "cup zzyzx") == pytest.approx(idf(8) / idf(1))
    assert specificity(stores, row.id, "zzyzx") == 0.0
    assert specificity(stores, row.id, "  ?! ") == 0.0
    assert specificity(stores, other.id, "red") == 1.0  # each collection its own counts
