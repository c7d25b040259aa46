"""Index types through the API: chosen at creation, changed by a reindex, kept by restarts.

The test model's texts land far apart, so every type finds an item by its own text; the
exhaustive behaviour on selective filters is covered in tests/index/test_index_types.py.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from index.snapshots import read_snapshot
from index.vector_index import VectorIndex
from tests.app.test_jobs import wait
from tests.conftest import error_code
from tests.index.projectors import SlowToArrive
from tests.index.test_builds import building, gone_within

SETTINGS: dict[str, dict[str, Any]] = {
    "flat": {"type": "flat"},
    "hnsw": {"type": "hnsw", "m": 8, "ef_search": 32},
    "ivf": {"type": "ivf", "nlist": 4, "nprobe": 2},
    "ivf-sq8": {"type": "ivf", "nlist": 4, "nprobe": 2, "quantizer": "sq8"},
    "ivf-pq": {"type": "ivf", "nlist": 4, "nprobe": 4, "quantizer": "pq", "pq_m": 16},
}
ITEMS = 300  # 4 lists want 156 training points; pq wants 9984, so ivf-pq stays exact


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(job_poll_s=0.1))) as c:
        yield c


def fill(client: TestClient, name: str, index: dict[str, Any], count: int = ITEMS) -> None:
    created = client.post("/v1/collections", json={"name": name, "index": index})
    assert created.status_code == 201, created.text
    add_notes(client, name, range(count))


def add_notes(client: TestClient, name: str, numbers: range) -> None:
    items = [
        {"text": f"note number {i} about {i % 7} things", "id": f"n{i}", "metadata": {"g": i % 3}}
        for i in numbers
    ]
    for start in range(0, len(items), 100):
        batch = {"items": items[start : start + 100]}
        reply = client.post(f"/v1/collections/{name}/items/batch", json=batch)
        assert reply.status_code == 200 and all(r["status"] == 201 for r in reply.json()["results"])


def top(client: TestClient, name: str, text: str, **extra: Any) -> list[str]:
    reply = client.post(f"/v1/collections/{name}/search", json={"text": text, **extra})
    assert reply.status_code == 200, reply.text
    return [r["item"]["id"] for r in reply.json()["results"]]


def info(client: TestClient, name: str) -> dict[str, Any]:
    index: dict[str, Any] = client.get(f"/v1/collections/{name}").json()["index"]
    return index


@pytest.mark.parametrize("kind", SETTINGS)
def test_every_type_finds_deletes_and_filters(client: TestClient, kind: str) -> None:
    fill(client, "c", SETTINGS[kind])
    index = info(client, "c")
    assert index["type"] == SETTINGS[kind]["type"] and index["size"] == ITEMS
    assert index["trained"] == (kind != "ivf-pq")  # too few vectors for 256 pq centroids
    for i in (0, 17, 123):
        assert top(client, "c", f"note number {i} about {i % 7} things", k=1) == [f"n{i}"]
    assert client.delete("/v1/collections/c/items/n17").status_code == 204
    assert "n17" not in top(client, "c", "note number 17 about 3 things", k=20)
    found = top(client, "c", "note number 5 about 5 things", k=10, filter={"g": 2})
    assert len(found) == 10 and all(int(i[1:]) % 3 == 2 for i in found)
    assert top(client, "c", "anything", k=5, filter={"g": 99}) == []


def test_settings_are_stored_with_their_defaults(client: TestClient) -> None:
    fill(client, "c", {"type": "hnsw", "m": 8}, count=1)
    assert info(client, "c")["params"] == {"m": 8, "ef_construction": 80, "ef_search": 64}
    fill(client, "d", {"type": "ivf", "quantizer": "sq8"}, count=1)
    index = info(client, "d")
    assert index["params"] == {"nlist": None, "nprobe": 16, "quantizer": "sq8", "pq_m": 64}
    assert not index["trained"]


@pytest.mark.parametrize(
    "index",
    [
        {"type": "flat", "m": 8},
        {"type": "hnsw", "nprobe": 4},
        {"type": "hnsw", "m": 1},
        {"type": "ivf", "quantizer": "pq", "pq_m": 5},  # 5 does not divide 64
        {"type": "ivf", "pq_m": 8},  # pq_m without pq
        {"type": "annoy"},
    ],
)
def test_bad_settings_are_422_and_create_nothing(client: TestClient, index: dict[str, Any]) -> None:
    reply = client.post("/v1/collections", json={"name": "x", "index": index})
    assert reply.status_code == 422, reply.text
    assert error_code(reply) == "validation_error"
    assert client.get("/v1/collections").json() == {"collections": []}


def test_reindex_changes_the_type_and_compacts(client: TestClient) -> None:
    fill(client, "c", {"type": "hnsw", "m": 8})
    before = {i: top(client, "c", f"note number {i} about {i % 7} things", k=3) for i in (1, 250)}
    for i in range(100):
        assert client.delete(f"/v1/collections/c/items/n{i}").status_code == 204
    assert info(client, "c")["deleted"] == 100  # masked: a graph cannot drop nodes
    job = client.post("/v1/jobs", json={"type": "reindex", "collection": "c"}).json()
    assert wait(client, job["id"])["status"] == "succeeded"
    assert info(client, "c")["deleted"] == 0
    spec = {"type": "ivf", "nlist": 4, "nprobe": 4}
    job = client.post("/v1/jobs", json={"type": "reindex", "collection": "c", "index": spec})
    assert job.status_code == 202, job.text
    done = wait(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"]["index"] == {"type": "ivf", **spec, "quantizer": "flat", "pq_m": 64}
    index = info(client, "c")
    assert index["type"] == "ivf" and index["trained"] and index["size"] == ITEMS - 100
    assert index["params"]["nlist"] == 4
    assert top(client, "c", "note number 150 about 3 things", k=1) == ["n150"]
    assert top(client, "c", "note number 250 about 5 things", k=3) == before[250]
    assert "n1" not in top(client, "c", "note number 1 about 1 things", k=3)


def test_a_large_collection_is_reindexed_in_a_child_process(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every collection is large here: the collection's own aligner crosses to the child,
    # which reads SQL (SQLite's file, or the Postgres schema) and writes the index to read in.
    caplog.set_level(logging.INFO, logger="index.builds")
    with TestClient(create_app(make_settings(job_poll_s=0.1, build_apart_at=1))) as client:
        fill(client, "c", {"type": "flat"})
        queries = [f"note number {i} about {i % 7} things" for i in (3, 150, 299)]
        before = [top(client, "c", q, k=3) for q in queries]
        spec = {"type": "ivf", "nlist": 4, "nprobe": 4, "quantizer": "sq8"}
        job = client.post("/v1/jobs", json={"type": "reindex", "collection": "c", "index": spec})
        assert wait(client, job.json()["id"])["status"] == "succeeded"
        assert info(client, "c")["type"] == "ivf" and info(client, "c")["size"] == ITEMS
        assert [top(client, "c", q, k=1)[0] for q in queries] == [b[0] for b in before]
    built = [r.getMessage() for r in caplog.records if "in a child process" in r.getMessage()]
    assert built and all("ivf index of c" in m for m in built), built


def test_a_shutdown_stops_a_build_in_a_child_and_the_next_start_builds_it(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    # A reindex another process committed: this server's follower builds the new index in
    # a child (every collection is large here), and the server is shut down meanwhile. The
    # shutdown must not wait for the build (an hour at 10M vectors) nor build it itself.
    settings = make_settings(build_apart_at=1)
    caplog.set_level(logging.INFO, logger="index.manager")
    with TestClient(create_app(settings)) as client:
        fill(client, "c", {"type": "flat"})
        services = client.app.state.services  # type: ignore[attr-defined]
        indexes, builds = services.indexes, services.indexes.builds
        aligner_of = indexes.aligner_of
        indexes.aligner_of = lambda row: SlowToArrive(aligner_of(row), os.getpid())
        row = services.stores.collections.get("c")
        services.stores.collections.set_space(collection_id=row.id, index=("hnsw", {}))
        child = building(builds)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 15
    assert gone_within(child.pid, 5)
    assert any("rebuild stopped" in r.getMessage() for r in caplog.records)
    with TestClient(create_app(settings)) as client:
        assert info(client, "c")["type"] == "hnsw" and info(client, "c")["size"] == ITEMS
        assert top(client, "c", "note number 150 about 3 things", k=1) == ["n150"]


def test_a_request_that_needs_a_build_once_they_are_stopped_is_503(
    make_settings: Callable[..., Settings],
) -> None:
    # Another process's collection, not yet loaded here and without a snapshot, searched
    # as this server shuts down: a clear 503 to retry elsewhere, not a 500.
    with TestClient(create_app(make_settings(build_apart_at=1))) as client:
        fill(client, "c", {"type": "flat"}, count=3)
        services = client.app.state.services  # type: ignore[attr-defined]
        row = services.stores.collections.get("c")
        services.indexes.drop(row.id)  # forgotten, its snapshot deleted
        services.indexes.stop_builds()
        reply = client.post("/v1/collections/c/search", json={"text": "note number 1"})
        assert reply.status_code == 503 and error_code(reply) == "not_ready", reply.text
        assert "shutting down" in reply.json()["error"]["message"]
        assert reply.headers["Retry-After"]


def test_reindex_with_bad_settings_is_422_and_queues_nothing(client: TestClient) -> None:
    fill(client, "c", {"type": "flat"}, count=1)
    index = {"type": "ivf", "quantizer": "pq", "pq_m": 7}
    bad = {"type": "reindex", "collection": "c", "index": index}
    reply = client.post("/v1/jobs", json=bad)
    assert reply.status_code == 422 and error_code(reply) == "validation_error"
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_the_type_survives_restarts(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        fill(client, "c", {"type": "hnsw", "m": 8})
        client.delete("/v1/collections/c/items/n3")
        expected = top(client, "c", "note number 4 about 4 things", k=5)
    for _ in range(2):  # from the shutdown snapshot, then again from it
        with TestClient(create_app(settings)) as client:
            index = info(client, "c")
            assert (index["type"], index["size"], index["deleted"]) == ("hnsw", ITEMS - 1, 1)
            assert top(client, "c", "note number 4 about 4 things", k=5) == expected


def test_a_reindexed_index_is_snapshotted_when_it_is_swapped_in(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(job_poll_s=0.1, snapshot_every=1_000_000)
    with TestClient(create_app(settings)) as client:
        fill(client, "c", {"type": "flat"}, count=20)
        spec = {"type": "hnsw", "m": 8}
        job = client.post("/v1/jobs", json={"type": "reindex", "collection": "c", "index": spec})
        assert wait(client, job.json()["id"])["status"] == "succeeded"
        # No shutdown and no snapshot tick yet: the swap itself made the new index durable.
        [path] = (settings.data_dir / "indexes").glob("*.faiss")
        snap = read_snapshot(path)
        assert snap is not None and snap.epoch == 1
        restored = VectorIndex.from_bytes(snap.dim, snap.payload)
        assert restored.spec.type == "hnsw" and restored.size == 20


def test_an_ivf_that_trained_is_snapshotted_at_the_next_check(
    make_settings: Callable[..., Settings],
) -> None:
    """Not after ``snapshot_every`` changes: a restart or a restore (backups copy snapshots)
    from the untrained snapshot would train other lists, and answer otherwise."""
    settings = make_settings(snapshot_every=1_000_000)
    with TestClient(create_app(settings)) as client:
        fill(client, "c", SETTINGS["ivf"], count=100)  # 4 lists train at 156 vectors
        services = client.app.state.services  # type: ignore[attr-defined]
        services.indexes.snapshot_all()
        path = services.indexes.snapshot_path(services.stores.collections.get("c").id)
        untrained = path.read_bytes()
        add_notes(client, "c", range(100, 120))
        services.indexes.snapshot_due(every=1_000_000, max_age_s=1e9)
        assert path.read_bytes() == untrained  # 20 changes, none due
        add_notes(client, "c", range(120, 200))
        assert info(client, "c")["trained"]
        services.indexes.snapshot_due(every=1_000_000, max_age_s=1e9)
        snap = read_snapshot(path)
        assert snap is not None
        assert VectorIndex.from_bytes(snap.dim, snap.payload).lists == 4


def test_a_request_holding_an_older_row_never_swaps_the_index_back(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(job_poll_s=0.1))) as client:
        fill(client, "c", {"type": "flat"}, count=5)
        services = client.app.state.services  # type: ignore[attr-defined]
        before = services.stores.collections.get("c")  # read, then another request reindexes
        job = client.post("/v1/jobs", json={"type": "reindex", "collection": "c"})
        assert wait(client, job.json()["id"])["status"] == "succeeded"
        live = services.indexes.get(services.stores.collections.get_by_id(before.id))
        swapped = live.space
        assert swapped.epoch == 1
        assert services.indexes.get(before).space is swapped  # no rebuild to epoch 0
