"""The stores of index/ over a fresh database: SQLite, then Postgres (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from index.db import make_engine, make_sessionmaker, migrate
from index.stores import Stores


@pytest.fixture
def stores(database_url: str) -> Iterator[Stores]:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent: a second start finds the schema current
    yield Stores.over(make_sessionmaker(engine))
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine over the fresh database."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()
