"""Migrations on SQLite and Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from index.db import downgrade, make_engine, make_sessionmaker, migrate
from index.stores import Stores

REPO = Path(__file__).resolve().parents[2]


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


def test_processes_starting_at_once_migrate_one_at_a_time(database_url: str) -> None:
    """``mmr serve --workers`` and replicas start together: each migrates a fresh database,
    one after another (on SQLite two of four used to fail creating the same tables)."""
    code = (
        "import sys; from index.db import make_engine, migrate; migrate(make_engine(sys.argv[1]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    answers = [(p, p.communicate(timeout=120)[1]) for p in starts]
    failed = [err[-500:] for p, err in answers if p.returncode != 0]
    assert not failed, failed
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_the_positions_table_comes_and_goes_with_its_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        Stores.over(make_sessionmaker(engine)).changes.report("p", {1: 7})
        downgrade(engine, "0005")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        migrate(engine)
        assert Stores.over(make_sessionmaker(engine)).changes.slowest(1, excluding="q") is None
    finally:
        engine.dispose()


def test_the_duplicate_listings_table_comes_and_goes_with_its_revision(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        downgrade(engine, "0008")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
            assert "duplicate_listings" not in inspect(conn).get_table_names()
        migrate(engine)
        with engine.connect() as conn:
            assert "duplicate_listings" in inspect(conn).get_table_names()
            keys = inspect(conn).get_foreign_keys("duplicate_listings")
        assert [(k["referred_table"], k["options"].get("ondelete")) for k in keys] == [
            ("collections", "CASCADE")
        ]
    finally:
        engine.dispose()
