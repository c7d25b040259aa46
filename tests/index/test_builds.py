"""Large collections' indexes are built in a child process (index.builds.BuildProcess): the
server reads in the index the child wrote, the same one a build in the server makes; a
child that fails leaves the build to the server, and a child never outlives the build it is
for: the server's shutdown stops it, and it exits once its server dies. SQLite, then
Postgres."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from index.builds import BuildProcess, BuildStopped, Target, build
from index.db import make_engine, make_sessionmaker
from index.stores import Stores
from tests.index.projectors import FailsInAChild, Identity, SlowInAChild
from tests.index.test_streamed_build import TYPES, assert_same, collection_of, fill, manager

N = 1200
REPO = Path(__file__).resolve().parents[2]
ON_DISK = ("ivf", {"nlist": 16, "quantizer": "sq8", "on_disk": True})


def url_of(stores: Stores) -> str:
    return stores.engine.url.render_as_string(hide_password=False)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-on-disk"])  # ivf-sq8: tests/app
def test_a_large_collection_is_built_in_a_child_as_it_would_be_here(
    stores: Stores, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    index_type, params = ON_DISK if kind == "ivf-on-disk" else TYPES[kind]
    row = collection_of(stores, index_type, params)
    fill(stores, row, 0, N)
    fill(stores, row, N, 100, version=7)  # another aligner version's: projected by the child
    root = tmp_path / "indexes"
    caplog.set_level(logging.INFO, logger="index.builds")
    live = manager(stores, root, BuildProcess(url_of(stores), root, at=N)).load(row)
    assert any("in a child process" in r.getMessage() for r in caplog.records)
    here = build(stores.items, Target.of(row), Identity(row.aligner_version))
    assert_same(live.index, here, "hnsw" if kind == "hnsw" else "exact")
    assert live.index.mapped == (kind == "ivf-on-disk")
    # Nothing of the child's is left in the folder (the mapped file is unlinked).
    assert [p.name for p in root.iterdir()] == []


def test_a_small_collection_is_built_here(
    stores: Stores, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, 50)
    caplog.set_level(logging.INFO, logger="index.builds")
    root = tmp_path / "indexes"
    live = manager(stores, root, BuildProcess(url_of(stores), root, at=51)).load(row)
    assert live.index.size == 50
    assert not any("in a child process" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("broken", ["database", "folder", "child"])
def test_a_child_that_fails_leaves_the_build_to_this_process(
    stores: Stores, tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, 300)
    fill(stores, row, 300, 20, version=7)  # projected by the aligner: the child's fails
    root = tmp_path / "indexes"
    url, folder = url_of(stores), root
    if broken == "database":
        url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # the child cannot connect
    if broken == "folder":
        (tmp_path / "file").write_text("a file where a folder should be")
        folder = tmp_path / "file" / "indexes"  # no folder to write in
    indexes = manager(stores, root, BuildProcess(url, folder, at=1))
    indexes.aligner_of = lambda row: FailsInAChild(row.aligner_version, os.getpid())
    caplog.set_level(logging.WARNING, logger="index.manager")
    live = indexes.load(row)
    assert live.index.size == 320
    here = build(stores.items, Target.of(row), Identity(row.aligner_version))
    assert_same(live.index, here, "exact")
    assert any("failed: building it in this one" in r.getMessage() for r in caplog.records)


def test_a_reindex_swaps_in_the_childs_index_and_replays_what_came_during_it(
    stores: Stores, tmp_path: Path
) -> None:
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, N)
    root = tmp_path / "indexes"
    indexes = manager(stores, root, BuildProcess(url_of(stores), root, at=N))
    live = indexes.load(row)
    before = live.index
    stores.collections.set_space(collection_id=row.id, index=("hnsw", {}))
    # Written after the epoch moved, before the swap: in SQL and in the log, not in the
    # index the child reads (it reads what SQL holds when it runs, this included), and
    # replayed after it either way (idempotent).
    fill(stores, row, N, 50)
    assert indexes.get(stores.collections.get("c"), wait=True) is live
    assert live.index is not before
    assert live.index.spec.type == "hnsw"
    assert live.index.size == N + 50
    hit = live.index.search(np.eye(64, dtype=np.float32)[0], 1)
    assert len(hit) == 1
    # The swap wrote the new index's snapshot at once; the child's file is gone.
    assert sorted(p.name for p in root.iterdir()) == [f"collection-{row.id}.faiss"]


def test_a_file_a_killed_server_left_mid_build_is_removed_at_start_up(
    stores: Stores, tmp_path: Path
) -> None:
    root = tmp_path / "indexes"
    root.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    left = root / f".collection-1.faiss.build.{gone.pid}.tmp"
    left.write_bytes(b"half an index")
    ours = root / f".collection-2.faiss.build.{os.getpid()}.tmp"  # a build in progress
    ours.write_bytes(b"being written")
    manager(stores, root, None).load_all()
    assert not left.exists() and ours.exists()


def test_counting_a_large_collection_is_not_cut_by_the_statement_time_limit(
    stores: Stores, database_url: str
) -> None:
    # A count of every row's vectors grows with the data, not with a request: at 10M rows
    # it ran past the server's limit at start-up, which stopped the server.
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, 20_000)
    hurried = make_engine(database_url, statement_timeout_s=0.001)
    try:
        items = Stores.over(make_sessionmaker(hurried)).items
        assert items.vector_count(row.id, row.dim) == 20_000
    finally:
        hurried.dispose()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def building(builds: BuildProcess) -> subprocess.Popen[bytes]:
    """The child of the one build ``builds`` runs, once it has started one (30 s at most)."""
    deadline = time.monotonic() + 30
    while not builds._running and time.monotonic() < deadline:
        time.sleep(0.01)
    (child,) = builds._running
    return child


def test_stopping_the_builds_ends_a_childs_build_and_nothing_is_built_here(
    stores: Stores, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A shutdown while the follower waits on a child's hour-long build: the server's
    # shutdown must not wait for it, nor build the index itself instead.
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, 300)
    fill(stores, row, 300, 20, version=7)  # projected by the aligner: the child's is slow
    root = tmp_path / "indexes"
    builds = BuildProcess(url_of(stores), root, at=1)
    indexes = manager(stores, root, builds)
    live = indexes.load(row)
    before = live.index
    stores.collections.set_space(collection_id=row.id, index=("hnsw", {}))
    indexes.aligner_of = lambda row: SlowInAChild(row.aligner_version, os.getpid())
    caplog.set_level(logging.INFO, logger="index.manager")
    got: list[object] = []
    rebuild = threading.Thread(
        target=lambda: got.append(indexes.get(stores.collections.get("c"), wait=True))
    )
    rebuild.start()
    child = building(builds)
    started = time.monotonic()
    indexes.stop_builds()
    rebuild.join(timeout=30)
    assert not rebuild.is_alive() and time.monotonic() - started < 10
    assert got == [live] and live.index is before and live.index.spec.type == "flat"
    assert gone_within(child.pid, 5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("rebuild stopped, the server is shutting down" in m for m in messages)
    assert not any("building it in this one" in m for m in messages)
    # Nothing starts after the stop; nothing of the child's is left in the folder.
    with pytest.raises(BuildStopped):
        builds.build(Target.of(row), Identity(row.aligner_version))
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


def build_child_of(pid: int) -> int:
    """The pid of the build's child of process ``pid`` (other children come and go: a
    library's import may run ``ldconfig``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in children.read_text().split():
            with contextlib.suppress(FileNotFoundError):
                if b"index.builds" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        time.sleep(0.01)
    raise AssertionError(f"process {pid} started no build in 30 s")


SERVER = """
import pickle, sys
from index.builds import BuildProcess
url, folder, target, aligner = pickle.load(sys.stdin.buffer)
BuildProcess(url, folder, at=1).build(target, aligner)
"""


def test_a_child_whose_server_was_killed_exits(stores: Stores, tmp_path: Path) -> None:
    row = collection_of(stores, *TYPES["flat"])
    fill(stores, row, 0, 300)
    fill(stores, row, 300, 20, version=7)  # projected by the aligner: the child's is slow
    root = tmp_path / "indexes"
    job = (url_of(stores), root, Target.of(row), SlowInAChild(row.aligner_version, os.getpid()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert server.stdin is not None
        server.stdin.write(pickle.dumps(job))
        server.stdin.close()
        child = build_child_of(server.pid)
        time.sleep(1.0)  # in its imports or its build: it checks once the imports are done
        if not alive(child):
            server.kill()
            assert server.stderr is not None
            raise AssertionError(server.stderr.read().decode()[-3000:])
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert server.stderr is not None
        server.stderr.close()
    assert gone_within(child, 20), "the build's child outlived its server"
