"""The ``auto`` index type through the API: the default for new collections, exact while
small, moved to HNSW by a reindex job once it grows past the threshold (a tiny one here),
back to exact when it shrinks, rebuilt when too many graph nodes are deleted; never a
request that waits, never a second job while one is pending."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import worker
from app.main import create_app
from app.services import autoindex
from app.settings import Settings
from app.state import Services
from index import spec as spec_module
from index.spaces import KEPT
from index.tables import SpaceRow
from tests.app.test_index_types import add_notes, info, top
from tests.app.test_jobs import wait

THRESHOLD = 20


@pytest.fixture(autouse=True)
def tiny_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "AUTO_EXACT_MAX", THRESHOLD)
    monkeypatch.setattr(autoindex, "RETUNE_EVERY_S", 0.05)
    monkeypatch.setattr(autoindex, "RETUNE_BACKOFF_S", 0.0)
    monkeypatch.setattr(autoindex, "RETUNE_FAILED_BACKOFF_S", 0.0)


def client_of(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    yield from client_of(make_settings(job_poll_s=0.05))


def jobs_of(client: TestClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/v1/jobs", params={"collection": "c"}).json()["jobs"]
    return found


def settled(client: TestClient, index_type: str, jobs: int, timeout: float = 60) -> dict[str, Any]:
    """The index once ``jobs`` jobs have ended and it is of ``index_type``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = jobs_of(client)
        done = len(listed) == jobs and all(j["status"] == "succeeded" for j in listed)
        if done and info(client, "c")["type"] == index_type:
            return info(client, "c")
        time.sleep(0.05)
    raise AssertionError(f"index {info(client, 'c')}, jobs {jobs_of(client)}")


def test_new_collections_default_to_auto_and_start_exact(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "c"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["index_type"] == "auto"
    assert body["index"]["type"] == "flat" and body["index"]["params"] == {}
    got = client.get("/v1/collections/c").json()
    assert got["index_type"] == "auto" and got["index"]["type"] == "flat"
    listed = client.get("/v1/collections").json()["collections"]
    assert [c["index_type"] for c in listed] == ["auto"]
    explicit = client.post("/v1/collections", json={"name": "d", "index": {"type": "flat"}})
    assert explicit.json()["index_type"] == "flat"


def test_auto_takes_no_parameters(client: TestClient) -> None:
    reply = client.post("/v1/collections", json={"name": "c", "index": {"type": "auto", "m": 8}})
    assert reply.status_code == 422, reply.text
    assert '"type": "hnsw"' in reply.json()["error"]["message"]
    assert client.get("/v1/collections").json() == {"collections": []}


def test_growing_past_the_threshold_moves_to_hnsw_and_back(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
    add_notes(client, "c", range(THRESHOLD))
    assert info(client, "c")["type"] == "flat"
    stop = threading.Event()
    answers: list[int] = []

    def search() -> None:  # searches answer throughout: before, during and after the swap
        while not stop.is_set():
            r = client.post("/v1/collections/c/search", json={"text": "note number 3", "k": 3})
            answers.append(r.status_code)

    searcher = threading.Thread(target=search)
    searcher.start()
    try:
        add_notes(client, "c", range(THRESHOLD, THRESHOLD + 10))
        index = settled(client, "hnsw", jobs=1)
    finally:
        stop.set()
        searcher.join()
    assert answers and set(answers) == {200}
    assert index["params"] == {"m": 32, "ef_construction": 80, "ef_search": 64}
    assert index["size"] == THRESHOLD + 10
    body = client.get("/v1/collections/c").json()
    assert body["index_type"] == "auto"  # still auto: the type in use is index.type
    (job,) = jobs_of(client)
    assert job["type"] == "reindex" and "past 20" in job["params"]["reason"]
    assert job["metrics"]["index_type"] == "auto"
    assert job["metrics"]["index"] == {"type": "hnsw", **index["params"]}
    assert top(client, "c", "note number 25 about 4 things", k=1) == ["n25"]
    # Too many deleted graph nodes (7 of 30): rebuilt, still a graph (23 > 20).
    for i in range(7):
        assert client.delete(f"/v1/collections/c/items/n{i}").status_code == 204
    index = settled(client, "hnsw", jobs=2)
    assert index["deleted"] == 0 and index["size"] == 23
    # Shrinking under half the threshold: back to exact.
    for i in range(7, 21):
        assert client.delete(f"/v1/collections/c/items/n{i}").status_code == 204
    index = settled(client, "flat", jobs=3)
    assert index["size"] == 9 and index["params"] == {}
    assert top(client, "c", "note number 25 about 4 things", k=1) == ["n25"]


def test_past_the_memory_budget_the_lists_go_on_disk(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget no graph fits in, and lists of 50: 100 vectors make an IVF of 2 lists,
    # trained (78 vectors train 2), kept in the mapped snapshot.
    monkeypatch.setattr(spec_module, "AUTO_MEMORY_MAX", 1)
    monkeypatch.setattr(spec_module, "AUTO_DISK_LIST_SIZE", 50)
    monkeypatch.setattr(spec_module, "AUTO_DISK_NLIST_MIN", 2)
    assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
    add_notes(client, "c", range(100))
    index = settled(client, "ivf", jobs=1)
    assert index["params"] == {
        "nlist": 2,
        "nprobe": 16,
        "quantizer": "sq8",
        "pq_m": 64,
        "on_disk": True,
    }
    assert index["trained"] and index["size"] == 100
    (job,) = jobs_of(client)
    assert "past 20" in job["params"]["reason"]  # from exact straight to the lists on disk
    assert top(client, "c", "note number 42 about 0 things", k=1) == ["n42"]
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    live = services.indexes.get(services.stores.collections.get("c"))
    assert live.index.mapped  # the swap's snapshot mapped the lists


def test_one_job_while_one_is_pending(make_settings: Callable[..., Settings]) -> None:
    # No worker here: the queued job stays queued, and the check finds it every time.
    for client in client_of(make_settings(worker="off")):
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        add_notes(client, "c", range(THRESHOLD + 5))
        deadline = time.monotonic() + 30
        while not jobs_of(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # ten more checks of the loop
        (job,) = jobs_of(client)
        assert job["status"] == "queued"
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        assert autoindex.Retuner(services).check() == []
        assert len(jobs_of(client)) == 1
        assert info(client, "c")["type"] == "flat"  # served exactly until the job runs


def test_explicit_types_are_kept(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "c", "index": {"type": "flat"}})
    assert created.status_code == 201
    add_notes(client, "c", range(THRESHOLD + 5))
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    assert autoindex.Retuner(services).check() == []
    assert jobs_of(client) == [] and info(client, "c")["type"] == "flat"


def test_reindex_to_auto_and_away(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "c", "index": {"type": "flat"}})
    assert created.status_code == 201
    add_notes(client, "c", range(THRESHOLD + 5))
    body = {"type": "reindex", "collection": "c", "index": {"type": "auto"}}
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    done = wait(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"]["index"]["type"] == "hnsw"  # chosen from the size right away
    got = client.get("/v1/collections/c").json()
    assert got["index_type"] == "auto" and got["index"]["type"] == "hnsw"
    body["index"] = {"type": "flat"}  # opting out: an explicit type
    done = wait(client, client.post("/v1/jobs", json=body).json()["id"])
    assert done["status"] == "succeeded"
    got = client.get("/v1/collections/c").json()
    assert got["index_type"] == "flat" and got["index"]["type"] == "flat"
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    assert autoindex.Retuner(services).check() == []


def test_the_chosen_index_survives_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(job_poll_s=0.05)
    for client in client_of(settings):
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        add_notes(client, "c", range(THRESHOLD + 5))
        settled(client, "hnsw", jobs=1)
    for client in client_of(settings):  # loaded from its snapshot as the spec SQL records
        got = client.get("/v1/collections/c").json()
        assert got["index_type"] == "auto" and got["index"]["type"] == "hnsw"
        assert got["index"]["size"] == THRESHOLD + 5
        assert top(client, "c", "note number 22 about 1 things", k=1) == ["n22"]
        time.sleep(0.3)  # several checks: the index fits, nothing more is queued
        assert len(jobs_of(client)) == 1


def test_a_failed_reindex_is_not_queued_again_at_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(services: Services, ctx: Any) -> dict[str, Any]:
        raise MemoryError("the build ran out of memory")

    monkeypatch.setattr(autoindex, "RETUNE_FAILED_BACKOFF_S", 600.0)
    monkeypatch.setitem(worker.HANDLERS, "reindex", fail)
    assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
    add_notes(client, "c", range(THRESHOLD + 5))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and [j["status"] for j in jobs_of(client)] != ["failed"]:
        time.sleep(0.05)
    time.sleep(0.5)  # ten more checks of the loop, each finding the index still too small
    (job,) = jobs_of(client)
    assert job["status"] == "failed" and "out of memory" in job["error"]
    assert info(client, "c")["type"] == "flat"  # still served, exactly
    # Nor by another process (or this one restarted), which did not queue it.
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    assert autoindex.Retuner(services).check() == []
    assert len(jobs_of(client)) == 1


def test_a_cancelled_reindex_is_not_queued_again_at_once(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the reindex the check queued is the operator's say: the next check does
    not queue it again (for the longer backoff)."""
    monkeypatch.setattr(autoindex, "RETUNE_FAILED_BACKOFF_S", 600.0)
    for client in client_of(make_settings(worker="off")):
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        add_notes(client, "c", range(THRESHOLD + 5))
        deadline = time.monotonic() + 30
        while not jobs_of(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        (job,) = jobs_of(client)
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code in (200, 202), cancelled.text
        time.sleep(0.5)  # ten more checks of the loop, each finding the index too small
        assert [j["status"] for j in jobs_of(client)] == ["cancelled"]
        assert info(client, "c")["type"] == "flat"
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        assert autoindex.Retuner(services).check() == []  # another process: nor there


def test_no_reindex_while_a_migration_can_be_rolled_back(
    make_settings: Callable[..., Settings],
) -> None:
    """While a migration keeps the space it left (until confirmed), another job of the
    collection would make its rollback wait (409): the check queues none until then."""
    for client in client_of(make_settings(worker="off")):
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        row = services.stores.collections.get("c")
        with services.stores.sessions.begin() as session:
            session.add(
                SpaceRow(collection_id=row.id, key="left", model="m", dim=row.dim, state=KEPT)
            )
        add_notes(client, "c", range(THRESHOLD + 5))
        time.sleep(0.5)  # ten checks of the loop, each finding the index too small
        assert jobs_of(client) == []
        with services.stores.sessions.begin() as session:
            session.query(SpaceRow).filter_by(collection_id=row.id).delete()  # confirmed
        deadline = time.monotonic() + 30
        while not jobs_of(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [j["type"] for j in jobs_of(client)] == ["reindex"]
