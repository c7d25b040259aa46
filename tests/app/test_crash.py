"""Invariant 2: SIGKILL a server under concurrent writes, restart it, lose nothing acknowledged.

The suite runs a few rounds per database; ``make soak`` runs this same test with
``SOAK_ROUNDS`` (100 by default) rounds. Writers post, replace, patch metadata and delete.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_MODEL

REPO = Path(__file__).resolve().parents[2]
CYCLES = int(os.environ.get("SOAK_ROUNDS", "6"))  # SIGKILLs per database
THREADS = 4
SEED = 20240611
SNAPSHOT_EVERY = 20  # small, so the periodic snapshotter writes snapshots between kills
KILL_AFTER_S = (0.3, 2.0)
SNAPSHOT_WAIT_S = 12.0  # the snapshotter looks every 5 s
READY_TIMEOUT_S = 180.0  # a loaded 2-core machine took over 60 s to start one (torch imports)
FILTER_VALUES = 500
MAX_LIVE = 80  # above this, writers mostly delete: bounds the checks (and k <= 1000)
COLLECTION = "crash"
ITEMS = f"/v1/collections/{COLLECTION}/items"
SEARCH = f"/v1/collections/{COLLECTION}/search"


# An item's state: its text and the `rev` of its metadata ({"key": id, "rev": rev}).
State = tuple[str, str]


def metadata_of(item_id: str, rev: str) -> dict[str, str]:
    """The metadata a writer gives an item: its id (to filter on) and a revision."""
    return {"key": item_id, "rev": rev}


@dataclass
class Ledger:
    """What clients were told: live items, acknowledged deletes, writes without an answer."""

    live: dict[str, State] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    unknown: dict[str, set[State | None]] = field(default_factory=dict)  # None: absent
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin_new(self, item_id: str, state: State) -> None:
        """A new item is in flight: it may or may not exist until answered."""
        with self.lock:
            self.unknown[item_id] = {None, state}

    def claim(
        self, rng: random.Random, new: Callable[[State], State | None]
    ) -> tuple[str, State, State | None] | None:
        """Take a live item for a write that gives it ``new(old)`` (None: a delete);
        (id, old, new); no other thread sees the item until the write is settled."""
        with self.lock:
            if not self.live:
                return None
            item_id = rng.choice(list(self.live))
            old = self.live.pop(item_id)
            state = new(old)
            self.unknown[item_id] = {old, state}
            return item_id, old, state

    def ack(self, item_id: str, state: State | None) -> None:
        """An answered write: the item now has this state, or is gone."""
        with self.lock:
            del self.unknown[item_id]
            if state is None:
                self.deleted.add(item_id)
            else:
                self.live[item_id] = state

    def fail(self, message: str) -> None:
        """Something no client should ever see."""
        with self.lock:
            self.errors.append(message)


@dataclass
class Storm:
    """What the writer threads of one cycle share."""

    url: str
    ledger: Ledger
    cycle: int
    stop: threading.Event = field(default_factory=threading.Event)
    killed: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=dict)
    # Answers that leave a write's outcome unknown, like no answer (a database restart's
    # 503: the commit may have landed before the connection broke).
    unknown_statuses: frozenset[int] = frozenset()


@dataclass
class Server:
    """A server process and where it listens and logs."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The server's environment: this test's MMR_* settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMR_")}
    env.update(
        MMR_DATA_DIR=str(tmp_path / "data"),
        MMR_DATABASE_URL=database_url,
        MMR_MODEL=TEST_MODEL,
        MMR_DEVICE="cpu",
        MMR_TORCH_THREADS="1",
        MMR_SNAPSHOT_EVERY=str(SNAPSHOT_EVERY),
        MMR_LOG_LEVEL="warning",
        PYTHONPATH=str(REPO),
    )
    return env


def log_tail(log: Path, chars: int = 4000) -> str:
    """The end of a server log, for failure messages."""
    return log.read_text(errors="replace")[-chars:]


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[Server]:
    """A ready server in a subprocess; killed on the way out if still alive."""
    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=out, stderr=out)
        try:
            server = Server(proc, f"http://127.0.0.1:{port}", log)
            wait_ready(server)
            yield server
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def wait_ready(server: Server) -> None:
    """Poll /readyz until 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited ({server.proc.returncode}):\n{log_tail(server.log)}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{log_tail(server.log)}")


def call(storm: Storm, client: httpx.Client, method: str, url: str, body: Any = None) -> int | None:
    """The response status, or None when no answer came (expected only after the kill)."""
    try:
        return client.request(method, url, json=body).status_code
    except httpx.TransportError as exc:
        if not storm.killed.is_set():
            storm.ledger.fail(f"{method} {url}: {exc!r} before the kill")
        return None


def settle(storm: Storm, op: str, item_id: str, status: int | None, state: State | None) -> None:
    """Record one write's outcome: acknowledged, unknown (no answer) or an error."""
    expected = {"post": 201, "replace": 200, "patch": 200, "delete": 204}[op]
    known = status is not None and status not in storm.unknown_statuses
    if status == expected:
        storm.ledger.ack(item_id, state)
    elif known:
        storm.ledger.fail(f"{op} {item_id}: {status}, expected {expected}")
        return
    with storm.ledger.lock:
        outcome = op if known else f"unknown ({status})" if status else "unknown"
        storm.counts[outcome] = storm.counts.get(outcome, 0) + 1


def post_new(storm: Storm, client: httpx.Client, item_id: str) -> None:
    """Add an item under a new client id."""
    state = (f"item {item_id}", item_id)
    storm.ledger.begin_new(item_id, state)
    body = {"id": item_id, "text": state[0], "metadata": metadata_of(item_id, state[1])}
    settle(storm, "post", item_id, call(storm, client, "POST", ITEMS, body), state)


def replace(storm: Storm, client: httpx.Client, rng: random.Random, tag: str) -> None:
    """Post an acknowledged id again with new text."""
    claimed = storm.ledger.claim(rng, lambda _: (f"replaced by {tag}", tag))
    if claimed is not None:
        item_id, _, new = claimed
        assert new is not None
        body = {"id": item_id, "text": new[0], "metadata": metadata_of(item_id, new[1])}
        status = call(storm, client, "POST", ITEMS, body)
        settle(storm, "replace", item_id, status, new)


def patch(storm: Storm, client: httpx.Client, rng: random.Random, tag: str) -> None:
    """Give an acknowledged item new metadata (its text and vector stay)."""
    claimed = storm.ledger.claim(rng, lambda old: (old[0], tag))
    if claimed is not None:
        item_id, _, new = claimed
        assert new is not None
        body = {"metadata": metadata_of(item_id, new[1])}
        status = call(storm, client, "PATCH", f"{ITEMS}/{item_id}", body)
        settle(storm, "patch", item_id, status, new)


def delete(storm: Storm, client: httpx.Client, rng: random.Random) -> None:
    """Delete an acknowledged item."""
    claimed = storm.ledger.claim(rng, lambda _: None)
    if claimed is not None:
        status = call(storm, client, "DELETE", f"{ITEMS}/{claimed[0]}")
        settle(storm, "delete", claimed[0], status, None)


def writer(storm: Storm, thread: int, seed: int) -> None:
    """Fire a random mix of posts, replaces, patches and deletes until told to stop."""
    rng = random.Random(seed)
    with httpx.Client(base_url=storm.url, timeout=30.0) as client:
        for n in itertools.count():
            if storm.stop.is_set():
                return
            tag = f"c{storm.cycle}-t{thread}-{n}"
            roll = rng.random()
            if roll < (0.7 if len(storm.ledger.live) > MAX_LIVE else 0.3):
                delete(storm, client, rng)
            elif roll > 0.9:
                replace(storm, client, rng, tag)
            elif roll > 0.8:
                patch(storm, client, rng, tag)
            else:
                post_new(storm, client, tag)


def snapshot_stamp(data_dir: Path) -> list[tuple[str, int]]:
    """Which index snapshots exist and when they were last replaced."""
    return sorted((p.name, p.stat().st_mtime_ns) for p in data_dir.glob("indexes/*.faiss"))


def wait_for_snapshot(data_dir: Path, before: list[tuple[str, int]]) -> None:
    """Wait (bounded) until the snapshotter has written a new snapshot."""
    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while snapshot_stamp(data_dir) == before and time.monotonic() < deadline:
        time.sleep(0.05)


def storm_and_kill(server: Server, storm: Storm, rng: random.Random, data_dir: Path) -> bool:
    """Writers fire while the server is SIGKILLed at a random moment; True if it snapshotted."""
    threads = [
        threading.Thread(target=writer, args=(storm, t, rng.randrange(2**32)), daemon=True)
        for t in range(THREADS)
    ]
    before = snapshot_stamp(data_dir)
    for thread in threads:
        thread.start()
    # Every other cycle (every fourth in a long soak) lets a periodic snapshot land first,
    # so restarts also replay a log tail.
    if storm.cycle % 2 == 1 and (storm.cycle < 6 or storm.cycle % 4 == 1):
        wait_for_snapshot(data_dir, before)
    time.sleep(rng.uniform(*KILL_AFTER_S))
    storm.killed.set()
    storm.stop.set()  # no new writes; those in flight die with the server
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a writer thread hangs after the kill"
    return snapshot_stamp(data_dir) != before


def search_ids(client: httpx.Client, body: dict[str, Any]) -> list[tuple[str, float]]:
    """(id, score) of a search's results, best first."""
    r = client.post(SEARCH, json=body)
    assert r.status_code == 200, r.text
    return [(hit["item"]["id"], hit["score"]) for hit in r.json()["results"]]


def check_live(client: httpx.Client, item_id: str, state: State) -> None:
    """An acknowledged item has its last text and metadata, its bytes and its vector in
    the index."""
    text, rev = state
    r = client.get(f"{ITEMS}/{item_id}")
    assert r.status_code == 200, f"acknowledged {item_id} lost: {r.text}"
    assert (r.json()["text"], r.json()["metadata"]) == (text, metadata_of(item_id, rev))
    r = client.get(f"{ITEMS}/{item_id}/content")
    assert (r.status_code, r.text) == (200, text), f"the bytes of {item_id} are lost"
    hits = search_ids(client, {"text": text, "k": 1, "filter": {"key": item_id}})
    assert [i for i, _ in hits] == [item_id], f"{item_id} is in SQL but not in the index"
    assert hits[0][1] > 0.999, f"the index holds a stale vector for {item_id}: {hits}"


def check_gone(client: httpx.Client, item_id: str) -> None:
    """An acknowledged delete stays deleted."""
    r = client.get(f"{ITEMS}/{item_id}")
    assert r.status_code == 404, f"deleted {item_id} came back: {r.text}"


def check_no_deleted_hits(client: httpx.Client, deleted: set[str]) -> None:
    """No search for the deleted items' metadata finds any of them."""
    ids = sorted(deleted)
    for start in range(0, len(ids), FILTER_VALUES):  # a filter key takes 1000 values at most
        body = {
            "text": "anything",
            "k": 1000,
            "filter": {"key": ids[start : start + FILTER_VALUES]},
        }
        assert search_ids(client, body) == []


def list_ids(client: httpx.Client) -> list[str]:
    """Every item id, through the paginated listing."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        r = client.get(ITEMS, params=params)
        assert r.status_code == 200, r.text
        ids += [item["id"] for item in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return ids


def check_index_matches_sql(client: httpx.Client) -> set[str]:
    """SQL count == index size == listed items == an unfiltered top-k; the listed ids."""
    r = client.get(f"/v1/collections/{COLLECTION}")
    assert r.status_code == 200, r.text
    count, size = r.json()["count"], r.json()["index"]["size"]
    assert count == size, f"SQL holds {count} items but the index {size}"
    listed = list_ids(client)
    assert len(listed) == len(set(listed)) == count
    if count:
        found = [i for i, _ in search_ids(client, {"text": "anything", "k": count})]
        assert len(found) == count and set(found) == set(listed)
    return set(listed)


def resolve_unknown(client: httpx.Client, ledger: Ledger) -> None:
    """Writes that got no answer: whatever state survived must be one they could leave."""
    for item_id, states in sorted(ledger.unknown.items()):
        r = client.get(f"{ITEMS}/{item_id}")
        assert r.status_code in (200, 404), r.text
        body = r.json()
        state = (body["text"], body["metadata"].get("rev")) if r.status_code == 200 else None
        assert state in states, f"{item_id} has {state!r}, expected one of {states}"
        ledger.ack(item_id, state)  # from now on, held to it like an acknowledged write


def verify(client: httpx.Client, ledger: Ledger) -> None:
    """After a restart: acknowledged writes survived, deletes stayed deleted, index == SQL."""
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda pair: check_live(client, *pair), sorted(ledger.live.items())))
        list(pool.map(lambda item_id: check_gone(client, item_id), sorted(ledger.deleted)))
    check_no_deleted_hits(client, ledger.deleted)
    listed = check_index_matches_sql(client)
    assert set(ledger.live) <= listed <= set(ledger.live) | set(ledger.unknown)
    assert not listed & ledger.deleted
    resolve_unknown(client, ledger)


def terminate(server: Server) -> None:
    """Stop the server the polite way and check it exits cleanly."""
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal it caught once its graceful shutdown is done.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), log_tail(server.log)


@pytest.mark.slow
def test_sigkill_under_writes_loses_nothing_acknowledged(tmp_path: Path, database_url: str) -> None:
    """Many SIGKILLs under concurrent writes and deletes; every restart matches the ledger."""
    env, log = server_env(tmp_path, database_url), tmp_path / "server.log"
    rng, ledger, snapshots = random.Random(SEED), Ledger(), 0
    for cycle in range(CYCLES + 1):
        started = time.monotonic()
        with serve(env, log) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            if cycle == 0:
                r = client.post("/v1/collections", json={"name": COLLECTION})
                assert r.status_code == 201, r.text
            else:
                verify(client, ledger)
            if cycle == CYCLES:
                terminate(server)
                break
            storm = Storm(server.url, ledger, cycle)
            snapped = storm_and_kill(server, storm, rng, tmp_path / "data")
            snapshots += snapped
            assert not ledger.errors, ledger.errors
            took = time.monotonic() - started
            print(
                f"cycle {cycle}: {storm.counts}, live {len(ledger.live)}, snapshot {snapped}, "
                f"{took:.1f} s (start, verify, writes)"
            )
    assert snapshots, "no index snapshot was written between kills: replay went untested"
