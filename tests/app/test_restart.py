"""Restarts: the index comes back from its snapshot plus the change log, or from SQL alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from index.manager import IndexManager
from index.snapshots import read_snapshot


def found(client: TestClient, text: str, item_id: str) -> bool:
    """Whether a text query returns the item (through FAISS, filtered to it)."""
    response = client.post(
        "/v1/collections/c/search", json={"text": text, "k": 1, "filter": {"key": item_id}}
    )
    assert response.status_code == 200, response.text
    return [h["item"]["id"] for h in response.json()["results"]] == [item_id]


def add(client: TestClient, item_id: str) -> None:
    body = {"text": f"text of {item_id}", "id": item_id, "metadata": {"key": item_id}}
    assert client.post("/v1/collections/c/items", json=body).status_code == 201


def sizes(client: TestClient) -> tuple[int, int]:
    body = client.get("/v1/collections/c").json()
    return body["count"], body["index"]["size"]


def snapshots(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "indexes").glob("*.faiss"))


def seeded(settings: Settings, ids: list[str]) -> Path:
    """Start, create collection c with these items, stop cleanly; the snapshot written."""
    with TestClient(create_app(settings)) as c:
        c.post("/v1/collections", json={"name": "c"})
        for item_id in ids:
            add(c, item_id)
    [snap] = snapshots(settings)
    return snap


def test_items_survive_restarts(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    snap = seeded(settings, [f"a{i}" for i in range(5)])
    assert read_snapshot(snap) is not None  # a clean stop snapshots the index

    with TestClient(create_app(settings)) as c:
        assert all(found(c, f"text of a{i}", f"a{i}") for i in range(5))
        assert sizes(c) == (5, 5)

    snap.unlink()
    with TestClient(create_app(settings)) as c:
        assert all(found(c, f"text of a{i}", f"a{i}") for i in range(5))
        assert c.delete("/v1/collections/c/items/a3").status_code == 204

    for _ in range(2):
        with TestClient(create_app(settings)) as c:
            assert c.get("/v1/collections/c/items/a3").status_code == 404
            hits = c.post("/v1/collections/c/search", json={"text": "text of a3", "k": 100})
            assert "a3" not in [h["item"]["id"] for h in hits.json()["results"]]
            assert sizes(c) == (4, 4)


def test_changes_after_the_snapshot_are_replayed(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    snap = seeded(settings, [f"old{i}" for i in range(3)])
    stale = snap.read_bytes()

    # As if the process died: no shutdown snapshot, the old one stays on disk.
    with monkeypatch.context() as m:
        m.setattr(IndexManager, "snapshot_all", lambda self: None)
        with TestClient(create_app(settings)) as c:
            add(c, "new")
            c.delete("/v1/collections/c/items/old0")
            c.post("/v1/collections/c/items", json={"text": "changed", "id": "old1"})
    assert snap.read_bytes() == stale

    with TestClient(create_app(settings)) as c:
        assert sizes(c) == (3, 3)
        assert found(c, "text of new", "new")
        assert found(c, "text of old2", "old2")
        hits = c.post("/v1/collections/c/search", json={"text": "changed", "k": 1}).json()
        assert hits["results"][0]["item"]["id"] == "old1"
        assert hits["results"][0]["score"] > 0.999
        all_hits = c.post("/v1/collections/c/search", json={"text": "x", "k": 100}).json()
        assert "old0" not in [h["item"]["id"] for h in all_hits["results"]]


def test_an_old_snapshot_after_pruning_is_rebuilt(make_settings: Callable[..., Settings]) -> None:
    """A snapshot restored from an old backup cannot be replayed: the log was pruned."""
    settings = make_settings()
    snap = seeded(settings, ["first"])
    old = snap.read_bytes()
    with TestClient(create_app(settings)) as c:
        add(c, "second")
        c.delete("/v1/collections/c/items/first")
    newer = read_snapshot(snap)
    snap.write_bytes(old)
    older = read_snapshot(snap)
    assert newer is not None and older is not None and older.seq < newer.seq

    with TestClient(create_app(settings)) as c:
        stores = c.app.state.services.stores  # type: ignore[attr-defined]
        row = stores.collections.get("c")
        # Every change is covered by a durable snapshot: the log holds nothing older.
        assert stores.changes.since(collection_id=row.id, seq=0) == (set(), 0)
        assert sizes(c) == (1, 1)
        assert found(c, "text of second", "second")


def test_a_corrupt_snapshot_is_rebuilt_from_sql(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    snap = seeded(settings, ["x", "y"])
    data = bytearray(snap.read_bytes())
    data[-10] ^= 0xFF
    snap.write_bytes(bytes(data))
    assert read_snapshot(snap) is None

    with TestClient(create_app(settings)) as c:
        assert sizes(c) == (2, 2)
        assert found(c, "text of x", "x")
        assert found(c, "text of y", "y")
