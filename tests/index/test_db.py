"""Migrations on SQLite and Postgres."""

from __future__ import annotations

from sqlalchemy import text

from index.db import make_engine, make_sessionmaker, migrate
from index.stores import Stores


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
        row = Stores.over(make_sessionmaker(engine)).collections.get("old")
        assert row.changes_pruned_seq == 0
    finally:
        engine.dispose()
