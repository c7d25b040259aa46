"""A Postgres restart under concurrent writes: nothing acknowledged is lost, the server
answers again within 10 s without being restarted, and its background loops live on.

The Postgres restarted is a private instance made for the test (initdb in a temp dir, a free
port): the shared test server must not go down under other tests. Skipped where the
Postgres server binaries are not installed. ``make soak`` runs more restarts
(``SOAK_PG_RESTARTS``).
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.app.test_crash import (
    COLLECTION,
    ITEMS,
    THREADS,
    Ledger,
    Storm,
    free_port,
    metadata_of,
    serve,
    server_env,
    snapshot_stamp,
    verify,
    wait_for_snapshot,
    writer,
)

RESTARTS = int(os.environ.get("SOAK_PG_RESTARTS", "2"))
ANSWER_WITHIN_S = 10.0
SEED = 20261205


@dataclass
class PrivatePostgres:
    """A Postgres cluster of this test's own: its data dir, port, and how to run its tools."""

    bin: Path
    data: Path
    port: int
    as_user: list[str]  # runuser prefix when running as root (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        """pg_ctl on this cluster; fails with its log when it fails. The server it starts
        logs to a file: holding a pipe of ours, it would keep run() waiting for ever."""
        log = self.data.parent / "postgres.log"
        ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", *args]
        done = subprocess.run(
            [*self.as_user, *ctl], stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )
        assert done.returncode == 0, f"{done.stdout!r}{done.stderr!r}{log.read_text()[-3000:]}"


def postgres_bin() -> Path | None:
    """The newest installed Postgres server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster on a free port, stopped and removed afterwards."""
    bin_dir = postgres_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("the Postgres server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="mmr-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: initdb refuses root")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pg = PrivatePostgres(bin_dir, root / "data", free_port(), as_user)
    argv = [*as_user, str(bin_dir / "initdb"), "-D", str(pg.data), "-U", "postgres"]
    subprocess.run([*argv, "-A", "trust", "--no-sync"], check=True, capture_output=True)
    options = f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1"
    pg.ctl("-o", options, "start")
    try:
        yield pg
    finally:
        pg.ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def seconds_until_written(client: httpx.Client, tag: str) -> float:
    """Seconds until a write succeeds again (polled; fails after ANSWER_WITHIN_S)."""
    started = time.monotonic()
    item_id = f"probe-{tag}"
    body = {"id": item_id, "text": f"probe {tag}", "metadata": metadata_of(item_id, "probe")}
    while True:
        try:
            if client.post(ITEMS, json=body).status_code == 201:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        elapsed = time.monotonic() - started
        assert elapsed < ANSWER_WITHIN_S, f"no write succeeded {elapsed:.1f} s after the restart"
        time.sleep(0.05)


def loops_alive(client: httpx.Client, data_dir: Path) -> None:
    """The job worker runs a new job; the snapshotter writes a new snapshot."""
    before = snapshot_stamp(data_dir)
    r = client.post("/v1/jobs", json={"collection": COLLECTION, "type": "reindex"})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (status := client.get(f"/v1/jobs/{r.json()['id']}").json()["status"]) != "succeeded":
        assert status in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.1)
    wait_for_snapshot(data_dir, before)  # a reindex swaps and snapshots at once
    assert snapshot_stamp(data_dir) != before, "no snapshot after the restart"


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restart_under_writes(tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    env = server_env(tmp_path, private_postgres.url)
    rng, ledger = random.Random(SEED), Ledger()
    with (
        serve(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        for restart in range(RESTARTS):
            storm = Storm(server.url, ledger, restart, unknown_statuses=frozenset({503}))
            threads = [
                threading.Thread(target=writer, args=(storm, t, rng.randrange(2**32)))
                for t in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            mode = ("fast", "immediate")[restart % 2]  # an operator's restart, then a crash
            down = time.monotonic()
            private_postgres.ctl("-m", mode, "restart")
            restarted = time.monotonic() - down
            took = seconds_until_written(client, str(restart))
            time.sleep(1.0)  # writers go on against the restarted database
            storm.stop.set()
            for thread in threads:
                thread.join(timeout=60)
                assert not thread.is_alive(), "a writer hangs after the restart"
            assert not ledger.errors, ledger.errors
            ledger.live[f"probe-{restart}"] = (f"probe {restart}", "probe")
            print(
                f"restart {restart} ({mode}): pg_ctl restart {restarted:.2f} s, "
                f"then writes again after {took:.2f} s, {storm.counts}"
            )
            verify(client, ledger)
            loops_alive(client, tmp_path / "data")
