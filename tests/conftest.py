"""Shared fixtures: every API test runs against SQLite and against Postgres.

The Postgres runs carry the ``postgres`` marker; tests/postgres_gate.py skips them, with one
summary line, where the server cannot be reached (CI requires it instead).

Property tests explore new examples on every local run; CI (``MMR_HYPOTHESIS_PROFILE=ci``,
set by .ci/run) runs the same examples every time, seeded by each test's name, so that an
example a run finds is a bug to fix on a developer's machine, not a CI run that fails by luck.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

from app.main import create_app
from app.settings import Settings
from tests.postgres_gate import PG_URL, POSTGRES

pytest_plugins = ["tests.postgres_gate"]
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("MMR_HYPOTHESIS_PROFILE", "default"))
TEST_MODEL = "random:mmr-tiny"  # a tiny open_clip architecture: plumbing, not meaning


@pytest.fixture(params=["sqlite", POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database: a SQLite file, or a Postgres schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mmr.sqlite3'}"
        return
    yield from postgres_schema_url()


def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections see only a new schema; dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Settings for a test server in tmp_path; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "model": TEST_MODEL,
            "device": "cpu",
            "torch_threads": 1,
            # auto's int8 check times the model: a test must not depend on a measurement.
            # auto and int8 have their own tests (tests/models/runtime/test_precision.py).
            "precision": "fp32",
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the real app, lifespan included."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def collection(client: TestClient) -> str:
    """A new empty collection's name."""
    assert client.post("/v1/collections", json={"name": "things"}).status_code == 201
    return "things"


def error_code(response: Any) -> str:
    """The API error code of a non-2xx response (and checks its shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "request_id"}, body
    assert body["error"]["message"], body
    assert body["error"]["request_id"] == response.headers["x-request-id"], body
    code: str = body["error"]["code"]
    return code
