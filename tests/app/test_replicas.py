"""Invariant 8 with real processes: two ``mmr serve`` on one database and data directory (as
``--workers`` or two replicas on one host run), each finds what the other wrote and stops
finding what it deleted, within the follow interval; after concurrent writes through both,
each answers with exactly the items SQL holds; ``mmr serve --workers`` does the same on one
port."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.app.test_crash import (
    READY_TIMEOUT_S,
    Server,
    free_port,
    log_tail,
    serve,
    server_env,
    wait_ready,
)

NAME = "shared"
ITEMS = f"/v1/collections/{NAME}/items"
SEARCH = f"/v1/collections/{NAME}/search"
VISIBLE_WITHIN_S = 3.0  # the bound here, on a loaded 2-core CI machine (interval: 0.2 s)


@pytest.fixture
def servers(tmp_path: Path, database_url: str) -> Iterator[list[Server]]:
    env = server_env(tmp_path, database_url)
    with ExitStack() as stack:
        yield [stack.enter_context(serve(env, tmp_path / f"server-{n}.log")) for n in range(2)]


def found(server: Server, item_id: str) -> bool:
    """Whether a search through ``server``'s index answers with the item (its own text)."""
    body = {"text": f"note {item_id}", "k": 1000}
    reply = httpx.post(f"{server.url}{SEARCH}", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return item_id in {hit["item"]["id"] for hit in reply.json()["results"]}


def held(server: Server) -> set[str]:
    """Every item the server's index answers with (a flat index: an exact, full search)."""
    reply = httpx.post(f"{server.url}{SEARCH}", json={"text": "note", "k": 1000}, timeout=30)
    assert reply.status_code == 200, reply.text
    return {hit["item"]["id"] for hit in reply.json()["results"]}


def in_sql(server: Server) -> set[str]:
    reply = httpx.get(f"{server.url}{ITEMS}", params={"limit": 1000}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["next_cursor"] is None
    return {item["id"] for item in reply.json()["items"]}


def waited_for(check: Callable[[], bool]) -> float:
    """Seconds until ``check`` holds; fails past the bound."""
    started = time.monotonic()
    while not check():
        waited = time.monotonic() - started
        assert waited < VISIBLE_WITHIN_S, f"not visible after {waited:.1f} s"
        time.sleep(0.02)
    return time.monotonic() - started


def post(server: Server, item_id: str) -> None:
    body = {"id": item_id, "text": f"note {item_id}"}
    reply = httpx.post(f"{server.url}{ITEMS}", json=body, timeout=30)
    assert reply.status_code in (200, 201), reply.text


def test_each_process_finds_what_the_other_wrote_and_not_what_it_deleted(
    servers: list[Server],
) -> None:
    a, b = servers
    created = httpx.post(f"{a.url}/v1/collections", json={"name": NAME}, timeout=30)
    assert created.status_code == 201, created.text
    assert held(b) == set()  # b has loaded the collection before a writes to it
    post(a, "from-a")
    assert found(a, "from-a")  # the writer reads its own write at once
    waited_for(lambda: found(b, "from-a"))
    assert httpx.delete(f"{b.url}{ITEMS}/from-a", timeout=30).status_code == 204
    assert not found(b, "from-a")
    waited_for(lambda: not found(a, "from-a"))


def test_after_concurrent_writes_through_both_each_holds_what_sql_holds(
    servers: list[Server],
) -> None:
    a, b = servers
    assert httpx.post(f"{a.url}/v1/collections", json={"name": NAME}).status_code == 201
    held(a), held(b)  # both have the collection loaded

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(30):
            server = rng.choice(servers)
            item_id = f"i{rng.randrange(40)}"
            if n % 3 == 2:
                status = httpx.delete(f"{server.url}{ITEMS}/{item_id}", timeout=30).status_code
                assert status in (204, 404)
            else:
                post(server, item_id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    want = in_sql(a)
    assert want == in_sql(b) and want
    waited_for(lambda: held(a) == want and held(b) == want)


def workers_of(supervisor: int) -> set[int]:
    """The processes ``mmr serve --workers`` started (its children, Linux)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {
        int(pid) for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    }


def test_serve_workers_runs_processes_that_answer_alike_and_replaces_one_killed(
    tmp_path: Path, database_url: str
) -> None:
    """``mmr serve --workers 2``: two processes on one port; whichever answers, a search finds
    every item written through either; one killed is replaced and the new one catches up."""
    env = {**server_env(tmp_path, database_url), "MMR_PRECISION": "fp32"}
    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"]
    log = tmp_path / "workers.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=out)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        waited_for(lambda: len(workers_of(proc.pid)) == 2)
        first = workers_of(proc.pid)
        assert httpx.post(f"{server.url}/v1/collections", json={"name": NAME}).status_code == 201
        for n in range(12):
            post(server, f"w{n}")
        want = {f"w{n}" for n in range(12)}
        # Each search lands on either process: all of them answer with every item.
        waited_for(lambda: all(held(server) == want for _ in range(8)))
        os.kill(min(first), signal.SIGKILL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(workers_of(proc.pid) - first) < 1 or len(workers_of(proc.pid)) < 2:
            assert time.monotonic() < deadline, log_tail(log)
            time.sleep(0.2)
        for n in range(12, 16):
            post(server, f"w{n}")
        want |= {f"w{n}" for n in range(12, 16)}
        deadline = time.monotonic() + READY_TIMEOUT_S  # the new process loads, then follows
        while not all(held(server) == want for _ in range(8)):
            assert time.monotonic() < deadline, log_tail(log)
            time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
