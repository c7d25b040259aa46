"""Database outages: requests answer 503 while it lasts, background loops outlive it, and
the service recovers by itself (issue 19, item 6).

SQLite's outage is made by refusing every new connection (the pool emptied first); on
Postgres it is real: the test's own role loses the right to log in and its sessions are
terminated, as a server restart or a network cut would do.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

import app.lifespan
from app.main import create_app
from app.settings import Settings
from app.worker import Worker
from index.faults import Retrier, database_unavailable, run_resilient, storage_full
from tests.conftest import TEST_MODEL, error_code
from tests.factories import add_text, found_text, services_of
from tests.postgres_gate import PG_URL, POSTGRES

NAME = "outage"
ITEMS = f"/v1/collections/{NAME}/items"
LOOPS = ("mmr-snapshots", "mmr-worker", "mmr-retune")


@pytest.fixture(params=["sqlite", POSTGRES])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(URL, Postgres role or None): on Postgres, a schema owned by a role of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mmr.sqlite3'}", None
        return
    name = f"outage_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
        conn.execute(text(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"'))
    url = PG_URL.replace("postgres@", f"{name}@", 1)
    try:
        yield f"{url}?options=-csearch_path%3D{name}", name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER ROLE "{name}" LOGIN'))
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
            terminate(conn, name)
            conn.execute(text(f'DROP ROLE "{name}"'))
        admin.dispose()


def terminate(conn: Any, role: str) -> None:
    """End every session of a role (only this test's: other tests share the server)."""
    conn.execute(
        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
        {"r": role},
    )


def refuse_connections(*_: Any) -> None:
    """What sqlite3 raises when the database file cannot be reached."""
    raise sqlite3.OperationalError("unable to open database file")


@contextmanager
def outage(engine: Engine, role: str | None) -> Iterator[None]:
    """No new connection succeeds and the pooled ones are gone until the block ends."""
    if role is None:
        event.listen(engine, "do_connect", refuse_connections)
        engine.dispose()
        try:
            yield
        finally:
            event.remove(engine, "do_connect", refuse_connections)
        return
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER ROLE "{role}" NOLOGIN'))
            terminate(conn, role)
        yield
        with admin.connect() as conn:
            conn.execute(text(f'ALTER ROLE "{role}" LOGIN'))
    finally:
        admin.dispose()


@pytest.fixture
def client(
    database: tuple[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setattr(app.lifespan, "SNAPSHOT_CHECK_S", 0.2)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database[0],
        model=TEST_MODEL,
        device="cpu",
        torch_threads=1,
        precision="fp32",
        job_poll_s=0.1,
        snapshot_every=1,
        _env_file=None,  # type: ignore[call-arg]
    )
    with TestClient(create_app(settings)) as c:
        yield c


def loops_alive() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive()} & set(LOOPS)


def add(client: TestClient, item_id: str) -> Any:
    return add_text(client, NAME, item_id)


def found(client: TestClient, item_id: str) -> bool:
    return found_text(client, NAME, item_id)


def until(check: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until check() holds (fails after timeout)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"still not so after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def answers(client: TestClient) -> bool:
    return client.get(ITEMS).status_code == 200


def test_outage_answers_503_and_the_service_recovers_by_itself(
    client: TestClient, database: tuple[str, str | None]
) -> None:
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    assert add(client, "before").status_code == 201
    engine = services_of(client).engine
    with outage(engine, database[1]):
        time.sleep(0.3)  # the collection cache (0.5 s) may still name the collection
        for response in (
            add(client, "during"),
            client.get(f"{ITEMS}/before"),
            client.get(ITEMS),
            client.post(f"/v1/collections/{NAME}/search", json={"text": "x"}),
            client.post("/v1/jobs", json={"collection": NAME, "type": "reindex"}),
            client.get("/v1/collections"),
        ):
            assert response.status_code == 503, response.text
            assert error_code(response) == "database_unavailable"
            assert response.headers["Retry-After"].isdigit()
        assert client.get("/readyz").status_code == 503
        time.sleep(1.0)  # the worker and the snapshotter meet the outage many times
        assert loops_alive() == set(LOOPS)
    until(lambda: answers(client), timeout=10)
    assert add(client, "after").status_code == 201
    assert found(client, "before") and found(client, "after")
    assert client.get(f"{ITEMS}/during").status_code == 404
    job = client.post("/v1/jobs", json={"collection": NAME, "type": "reindex"}).json()
    until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
    assert loops_alive() == set(LOOPS)
    assert client.get("/readyz").status_code == 200


def test_a_job_queued_before_an_outage_runs_after_it(
    client: TestClient, database: tuple[str, str | None]
) -> None:
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    assert add(client, "a").status_code == 201
    services = services_of(client)
    with outage(services.engine, database[1]):
        # Queued behind the API's back while it cannot see the database: only the worker
        # polling again after the outage can find it.
        time.sleep(1.0)
        assert loops_alive() == set(LOOPS)
    until(lambda: answers(client), timeout=10)
    row = services.stores.collections.get(NAME)
    job = services.stores.jobs.create(
        type="reindex", collection_id=row.id, collection=NAME, params={}
    )
    until(lambda: client.get(f"/v1/jobs/{job.id}").json()["status"] == "succeeded")
    assert loops_alive() == set(LOOPS)


def test_snapshots_resume_after_an_outage(
    client: TestClient, database: tuple[str, str | None]
) -> None:
    """Items written just before the outage reach a snapshot once it ends."""
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    services = services_of(client)
    live = services.indexes.get(services.stores.collections.get(NAME))
    with outage(services.engine, database[1]):
        live.dirty += 1  # a change the snapshotter must write, and cannot
        time.sleep(1.0)
        assert live.dirty and loops_alive() == set(LOOPS)
    until(lambda: live.dirty == 0, timeout=35)


def operational(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


def test_faults_are_told_apart_from_their_look_alikes() -> None:
    assert database_unavailable(operational("unable to open database file"))
    assert not database_unavailable(operational("database is locked"))
    assert not database_unavailable(operational("interrupted"))  # a statement time limit
    assert storage_full(operational("database or disk is full"))
    assert storage_full(OSError(28, "No space left on device"))
    assert not storage_full(FileNotFoundError(2, "gone"))
    assert not database_unavailable(ValueError("x"))
    # Postgres: the server shutting down is an outage; a statement timeout and a full disk
    # are not (503 query_timeout, 507).
    assert database_unavailable(psycopg.errors.AdminShutdown("terminating connection"))
    assert not database_unavailable(psycopg.errors.QueryCanceled("statement timeout"))
    assert storage_full(psycopg.errors.DiskFull("could not extend file"))
    assert not database_unavailable(psycopg.errors.DiskFull("could not extend file"))


def test_a_loop_outlives_every_error_and_logs_an_outage_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    stop = threading.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) <= 5:
            raise operational("unable to open database file")
        if len(calls) == 6:
            raise RuntimeError("a bug")
        if len(calls) >= 8:
            stop.set()

    with caplog.at_level("WARNING", logger="index.faults"):
        thread = threading.Thread(
            target=run_resilient,
            args=(Retrier("test loop", base=0.001), step, stop),
            kwargs={"every": lambda: 0.0},
        )
        thread.start()
        thread.join(timeout=30)
    assert not thread.is_alive() and len(calls) >= 8
    lines = [r.getMessage() for r in caplog.records]
    assert sum("retrying with backoff" in m for m in lines) == 1, lines
    assert sum("recovered after 6 failed attempts" in m for m in lines) == 1, lines


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    retrier = Retrier("x", base=1.0, cap=8.0)
    waits = [retrier.failed(ValueError()) for _ in range(8)]
    assert all(0.5 * min(8.0, 2**i) <= w <= min(8.0, 2**i) for i, w in enumerate(waits))
    retrier.succeeded()
    assert retrier.failed(ValueError()) <= 1.0


class FlakyJobs:
    """A job store whose heartbeats fail a few times, as during an outage."""

    def __init__(self, failures: int) -> None:
        self.failures, self.beats = failures, 0

    def heartbeat(self, *_: Any, **__: Any) -> bool:
        self.beats += 1
        if self.beats <= self.failures:
            raise operational("unable to open database file")
        return True


def test_the_heartbeat_outlives_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.services.jobs import JobContext

    jobs = FlakyJobs(failures=3)
    stores = type("St", (), {"jobs": jobs})()
    services: Any = type(
        "S", (), {"stores": stores, "settings": Settings(job_lease_s=0.15, _env_file=None)}
    )()  # type: ignore[call-arg]
    worker = Worker(services, name="w")
    ctx = JobContext(job=type("J", (), {"id": "j"})())  # type: ignore[arg-type]
    beat = threading.Thread(target=worker._heartbeat, args=(ctx,))
    beat.start()
    until(lambda: jobs.beats >= 5, timeout=10)
    assert beat.is_alive()
    ctx.stop.set()
    beat.join(timeout=5)
