"""Fixtures of the backup tests (tests/app/test_backup*.py): a deployment to restore into."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from tests.conftest import postgres_schema_url


@pytest.fixture
def empty_url(tmp_path: Path, database_url: str) -> Iterator[str]:
    """A second empty database of the same kind as ``database_url``."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    yield from postgres_schema_url()


@pytest.fixture
def target(make_settings: Callable[..., Settings], tmp_path: Path, empty_url: str) -> Settings:
    """Settings of an empty deployment to restore into."""
    return make_settings(data_dir=tmp_path / "restored", database_url=empty_url)
