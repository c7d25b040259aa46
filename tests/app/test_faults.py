"""Faults after a commit and a full disk (issue 19, items 7 and 8).

- A write whose index update fails after its SQL commit is never lost: no snapshot prunes
  its change from the log before a replay has put it in the index.
- A full disk answers 507 ``insufficient_storage``, leaves no temp file, keeps reads
  working, and the service writes again once space returns.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.main import create_app
from app.settings import Settings
from index import db as db_module
from index.vector_index import VectorIndex
from tests.conftest import error_code
from tests.factories import add_text, found_text, image_bytes, services_of

NAME = "c"
ITEMS = f"/v1/collections/{NAME}/items"


def add(client: TestClient, item_id: str) -> Any:
    return add_text(client, NAME, item_id)


def found(client: TestClient, item_id: str) -> bool:
    return found_text(client, NAME, item_id)


def sizes(client: TestClient) -> tuple[int, int]:
    body = client.get(f"/v1/collections/{NAME}").json()
    return body["count"], body["index"]["size"]


@pytest.fixture
def index_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Set to [1]: the next VectorIndex.upsert raises (after the SQL commit before it)."""
    failures = [0]
    upsert = VectorIndex.upsert

    def flaky(self: VectorIndex, *args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("injected: the index update failed")
        return upsert(self, *args, **kwargs)

    monkeypatch.setattr(VectorIndex, "upsert", flaky)
    return failures


def test_a_failed_index_update_survives_a_snapshot_and_a_restart(
    make_settings: Callable[..., Settings], index_fails_once: list[int]
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        assert add(client, "a").status_code == 201
        index_fails_once[0] = 1
        assert add(client, "lost").status_code == 500  # committed in SQL, not in the index
        assert not index_fails_once[0]
        services = services_of(client)
        # The snapshot that would prune the change log (before the fix) runs first.
        services.indexes.snapshot_all()
        assert found(client, "lost")
        assert sizes(client) == (2, 2)
    with TestClient(create_app(settings)) as client:  # the clean stop snapshotted again
        assert found(client, "lost") and found(client, "a")
        assert sizes(client) == (2, 2)


def test_a_failed_index_update_is_repaired_before_the_next_search(
    make_settings: Callable[..., Settings], index_fails_once: list[int]
) -> None:
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        index_fails_once[0] = 1
        assert add(client, "lost").status_code == 500
        assert found(client, "lost")
        assert sizes(client) == (1, 1)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


@pytest.fixture
def disk() -> Iterator[dict[str, bool]]:
    """os.fsync answers ENOSPC while disk["full"] (where a full disk shows, at the latest)."""
    state = {"full": False}
    fsync = os.fsync

    def fake(fd: int) -> None:
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", fake)
    yield state
    mp.undo()


def test_a_full_disk_answers_507_and_recovers(client: TestClient, disk: dict[str, bool]) -> None:
    """The blob store's disk full: a file's original cannot be written (507, no temp file
    left), reads go on, and writes succeed again once there is room. A text's original is
    its row, so SQL alone decides a text's write (test_a_full_sqlite_database_answers_507)."""
    data_dir = services_of(client).settings.data_dir
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    assert add(client, "a").status_code == 201
    disk["full"] = True
    files = {"file": ("b.png", image_bytes("RGB", fmt="PNG"), "image/png")}
    r = client.post(ITEMS, files=files, data={"id": "f"})
    assert r.status_code == 507, r.text
    assert error_code(r) == "insufficient_storage"
    assert temp_files(data_dir) == []
    # Reads go on.
    assert client.get(f"{ITEMS}/a").status_code == 200
    assert client.get(f"{ITEMS}/f").status_code == 404
    assert found(client, "a")
    # A snapshot that cannot be written leaves the old one (or none) and no temp file.
    live = services_of(client).indexes.get(services_of(client).stores.collections.get(NAME))
    with pytest.raises(OSError):
        services_of(client).indexes.snapshot(live)
    assert temp_files(data_dir) == []
    disk["full"] = False
    assert client.post(ITEMS, files=files, data={"id": "f"}).status_code == 201
    assert add(client, "b").status_code == 201
    assert found(client, "b")
    services_of(client).indexes.snapshot(live)
    assert temp_files(data_dir) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_full_sqlite_database_answers_507(client: TestClient) -> None:
    """SQLite's own "database or disk is full", made real by capping the file's pages."""
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    assert add(client, "a").status_code == 201
    engine = services_of(client).engine

    def cap(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.execute("PRAGMA max_page_count=1")  # below its size: no page may be added

    event.listen(engine, "connect", cap)
    engine.dispose()
    try:
        big = {"id": "big", "text": "x " * 9000, "metadata": {"pad": "y" * 30000}}
        r = client.post(ITEMS, json=big)
        assert r.status_code == 507, r.text
        assert error_code(r) == "insufficient_storage"
        assert client.get(f"{ITEMS}/a").status_code == 200
        assert found(client, "a")
    finally:
        event.remove(engine, "connect", cap)
        engine.dispose()
    assert client.post(ITEMS, json=big).status_code == 201


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_file_locked_past_the_busy_timeout_answers_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding SQLite's write lock longer than the busy timeout: the write
    is told to come back (503 ``database_busy`` with Retry-After), not 500, and nothing of it
    is stored; once the lock is gone the same write succeeds."""
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    engine = services_of(client).engine
    engine.dispose()  # new connections take the short timeout
    other = sqlite3.connect(str(engine.url.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a writer elsewhere that does not let go
        r = add(client, "a")
        assert r.status_code == 503, r.text
        assert error_code(r) == "database_busy" and r.headers["Retry-After"]
        assert "another process" in r.json()["error"]["message"]
        live = services_of(client).indexes.get(services_of(client).stores.collections.get(NAME))
        assert not live.stale  # nothing was committed: no replay is owed
        batch = client.post(f"{ITEMS}/batch", json=[{"id": "b", "text": "b"}, {"text": "c"}])
        assert batch.status_code == 503, batch.text  # at once for the batch, not item by item
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get(f"{ITEMS}/a").status_code == 404
    assert add(client, "a").status_code == 201


def test_temp_files_of_killed_writers_are_removed_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    indexes = settings.data_dir / "indexes"
    indexes.mkdir(exist_ok=True)
    stale = indexes / ".collection-1.faiss.999999999.tmp"  # beyond pid_max: never alive
    mine = indexes / f".collection-1.faiss.{os.getpid()}.tmp"  # a live writer's
    stale.write_bytes(b"half a snapshot")
    mine.write_bytes(b"in progress")
    with TestClient(create_app(settings)):
        assert not stale.exists() and mine.exists()
