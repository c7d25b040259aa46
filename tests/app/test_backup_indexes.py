"""Backups carry each collection's index snapshot: a restored trained IVF keeps the original's
lists and answers every search as the original did at the backup's point in time; a
snapshot that cannot serve the backed-up rows is left out and the index rebuilt, said so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

import index.backup as backup_module
from app.main import create_app
from app.settings import Settings
from index.snapshots import read_snapshot
from tests.app.test_backup import NAME as THINGS
from tests.app.test_backup import answers, back_up, populate, reseal, restore_into, run_cli

NAME = "notes"
IVF = {"type": "ivf", "nlist": 8, "nprobe": 2}  # trains at 8 x 39 = 312 vectors
ITEMS = 400
QUERIES = 24


def fill(client: TestClient, index: dict[str, Any] = IVF) -> None:
    """An IVF collection past its training size (trained on the first 312 items)."""
    created = client.post("/v1/collections", json={"name": NAME, "index": index})
    assert created.status_code == 201, created.text
    for start in range(0, ITEMS, 100):
        batch = [
            {"id": f"n{i}", "text": f"note {i} on {i % 7} things", "metadata": {"g": i % 3}}
            for i in range(start, start + 100)
        ]
        reply = client.post(f"/v1/collections/{NAME}/items/batch", json=batch)
        assert all(r["status"] == 201 for r in reply.json()["results"]), reply.text
    assert client.get(f"/v1/collections/{NAME}").json()["index"]["trained"]


def searches(client: TestClient) -> list[list[tuple[str, float]]]:
    """Ids and scores, in rank order, of random-vector, text and filtered searches."""
    vectors = np.random.default_rng(7).standard_normal((QUERIES, 64))
    bodies: list[dict[str, Any]] = [{"vector": v.tolist(), "k": 10} for v in vectors]
    bodies += [{"text": f"note {i} on {i % 7} things", "k": 10} for i in (3, 150, 333)]
    bodies += [{"vector": vectors[0].tolist(), "k": 10, "filter": {"g": 1}}]
    found = []
    for body in bodies:
        reply = client.post(f"/v1/collections/{NAME}/search", json=body)
        assert reply.status_code == 200, reply.text
        found.append([(h["item"]["id"], h["score"]) for h in reply.json()["results"]])
    return found


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [i for i, _ in hits]


def same_answers(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> None:
    """The same ids in the same order, and the same scores (to float tolerance)."""
    differ = [n for n, (g, w) in enumerate(zip(got, want, strict=True)) if ids(g) != ids(w)]
    assert not differ, f"{len(differ)} of {len(want)} searches answer otherwise: {differ}"
    for hits, expected in zip(got, want, strict=True):
        assert [s for _, s in hits] == pytest.approx([s for _, s in expected], abs=1e-6)


class Writer:
    """Writes to the collection until stopped: new items, deletes and changed texts (the
    backup copies the originals deleted since its snapshot from the trash: index.blobs).

    ``pause`` held by someone else stops it between two writes (each write is then
    committed and in the index).
    """

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.pause = threading.Lock()
        self.stop = threading.Event()
        self.count = 0
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                with self.pause:
                    self.write(self.count)
                    self.count += 1
        except BaseException as exc:
            self.failed = exc
            raise

    def write(self, n: int) -> None:
        """However long the backup takes (a slow machine lets the writer run past the filled
        ids): deletes past them take its own earlier items, changes wrap round the filled ids
        (n + 1 is a multiple of 4, an id no delete takes)."""
        items = f"/v1/collections/{NAME}/items"
        if n % 4 == 1:
            gone = f"n{n}" if n < ITEMS else f"w{n - 1}"
            assert self.client.delete(f"{items}/{gone}").status_code == 204
        elif n % 4 == 3:  # an item the snapshot holds gets a new vector
            body = {"id": f"n{(n + 1) % ITEMS}", "text": f"changed {n}", "metadata": {"g": 1}}
            assert self.client.post(items, json=body).status_code == 200
        else:
            body = {"id": f"w{n}", "text": f"written {n} of {n % 5}", "metadata": {"g": n % 3}}
            assert self.client.post(items, json=body).status_code == 201

    def wait_for(self, writes: int) -> None:
        target = self.count + writes
        while self.count < target:
            assert self.thread.is_alive(), f"the writer stopped: {self.failed!r}"
            self.stop.wait(0.01)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        assert self.failed is None, f"the writer failed: {self.failed!r}"


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_restored_ivf_answers_as_the_original_at_the_backup_point(
    settings: Settings,
    target: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    on_disk: bool,
) -> None:
    # on_disk: the lists live in the snapshot file the backup copies (mapped, the writes
    # since in memory); the restore maps the copy and replays the log after it.
    out = tmp_path / "backup"
    before: list[Any] = []
    with TestClient(create_app(settings)) as client:
        fill(client, {**IVF, "on_disk": on_disk})
        client.app.state.services.indexes.snapshot_all()  # type: ignore[attr-defined]
        with Writer(client) as writer:
            writer.wait_for(20)  # changes after the snapshot: a restore replays them
            real = backup_module._snapshot

            @contextmanager
            def at_the_point(engine: Engine) -> Iterator[Any]:
                """The original's answers at the instant the backup's rows are read: the
                writer waits from the searches until the read transaction holds its view."""
                writer.pause.acquire()
                paused = True
                try:
                    before[:] = searches(client)
                    with real(engine) as conn:
                        conn.execute(text("SELECT COUNT(*) FROM changes"))  # the view starts
                        writer.pause.release()
                        paused = False
                        writer.wait_for(5)  # writes go on while the backup reads
                        yield conn
                finally:
                    if paused:
                        writer.pause.release()

            monkeypatch.setattr(backup_module, "_snapshot", at_the_point)
            assert run_cli(monkeypatch, settings, "backup", "--out", str(out)) == 0
        count = client.get(f"/v1/collections/{NAME}").json()["count"]
    manifest = json.loads((out / "manifest.json").read_text())["manifest"]
    assert count > manifest["tables"]["items"]["rows"]  # the writes after the point are not in it
    said = capsys.readouterr().out
    assert f"index of {NAME}: snapshot at change" in said, said
    assert run_cli(monkeypatch, target, "restore", "--from", str(out)) == 0
    said = capsys.readouterr().out
    assert f"index of {NAME}: from its snapshot at change" in said, said
    with TestClient(create_app(target)) as client:
        index = client.get(f"/v1/collections/{NAME}").json()["index"]
        assert index["trained"] and index["params"].get("on_disk", False) == on_disk
        same_answers(searches(client), before)
        services = client.app.state.services  # type: ignore[attr-defined]
        live = services.indexes.get(services.stores.collections.get(NAME))
        assert live.index.mapped == on_disk  # served from the restored file, not rebuilt


def snapshot_of(settings: Settings) -> Path:
    [path] = (settings.data_dir / "indexes").glob("*.faiss")
    return path


def test_a_snapshot_older_than_the_log_is_left_out_and_the_index_rebuilt(
    settings: Settings,
    target: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
    old = snapshot_of(settings).read_bytes()  # written at the clean stop
    with TestClient(create_app(settings)) as client:
        assert client.delete(f"/v1/collections/{THINGS}/items/t5").status_code == 204
        before = answers(client)
    snapshot_of(settings).write_bytes(old)  # the log since it is pruned: it cannot be replayed
    assert run_cli(monkeypatch, settings, "backup", "--out", str(tmp_path / "backup")) == 0
    said = capsys.readouterr().out
    assert f"index of {THINGS}: not copied (its change" in said and "predates" in said, said
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())["manifest"]
    assert not any(rel.startswith("indexes/") for rel in manifest["files"])
    assert not list((tmp_path / "backup").glob("indexes/*"))
    assert run_cli(monkeypatch, target, "restore", "--from", str(tmp_path / "backup")) == 0
    said = capsys.readouterr().out
    assert f"index of {THINGS}: rebuilt from SQL at start-up (its change" in said, said
    assert not (target.data_dir / "indexes").exists()
    with TestClient(create_app(target)) as client:
        assert answers(client) == before  # a flat index is exact however it is built


def test_a_snapshot_replaced_during_the_backup_is_copied_again(
    settings: Settings, target: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
        indexes = client.app.state.services.indexes  # type: ignore[attr-defined]
        indexes.snapshot_all()
        first = read_snapshot(snapshot_of(settings))
        copy = backup_module._copy_snapshots
        copies: list[int] = []

        def copy_then_snapshot(*args: Any) -> Any:
            copied = copy(*args)
            if not copies:  # the server snapshots and prunes before the rows are read
                body = {"id": "x", "text": "x"}
                assert client.post(f"/v1/collections/{THINGS}/items", json=body).is_success
                indexes.snapshot_all()
            copies.append(len(copied))
            return copied

        monkeypatch.setattr(backup_module, "_copy_snapshots", copy_then_snapshot)
        manifest = back_up(settings, tmp_path / "backup")
        before = answers(client)
    newest = read_snapshot(snapshot_of(settings))
    assert first is not None and newest is not None and first.seq < newest.seq
    assert copies == [1, 1]
    [entry] = manifest["indexes"].values()
    assert entry["seq"] == newest.seq and entry["file"] in manifest["files"]
    restore_into(target, tmp_path / "backup")
    with TestClient(create_app(target)) as client:
        assert answers(client) == before


def test_a_backup_of_format_1_restores_with_indexes_rebuilt(
    settings: Settings,
    target: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(settings)) as client:
        populate(client)
        before = answers(client)
    out = tmp_path / "backup"
    back_up(settings, out)
    # What the release before index snapshots wrote: no "indexes", no index files.
    body = json.loads((out / "manifest.json").read_text())["manifest"]
    body["format"] = "mmr-backup 1"
    del body["indexes"]
    for rel in [r for r in body["files"] if r.startswith("indexes/")]:
        del body["files"][rel]
        (out / rel).unlink()
    reseal(out, body)
    assert run_cli(monkeypatch, target, "restore", "--from", str(out)) == 0
    said = capsys.readouterr().out
    assert "rebuilt from SQL at start-up (a backup of format 'mmr-backup 1' holds no" in said
    with TestClient(create_app(target)) as client:
        assert answers(client) == before
