"""Index builds from SQL: in this process, or, for a large collection, in a process of its own.

A build streams the collection's rows a chunk at a time: what it holds besides the index is one
chunk (and an IVF's training sample), never the collection's vectors at once. Built inside the
server, though, its passing blocks (the chunks, FAISS's arrays as they grow) come from the C
allocator's arenas among blocks that live on, and a server kept tens to a hundred and more MB
after each reindex of a 100k collection, one after the other (docs/performance.md, "Memory").
:class:`BuildProcess` builds a large collection's index in a child (``python -m
index.builds``) that writes it as a snapshot file: the server reads the file in, each of the
index's arrays allocated once at its final size (as at start-up, within 1.1x of the index),
and everything else the build touched goes with the child.

A child never outlives the build it is for. The server's shutdown stops it (``stop``: a
follower thread in the middle of an hour-long build would otherwise hold the shutdown for
that hour; nothing is built in the server instead, the old index serves to the end and the
next start builds what SQL names), and a child whose server died (``kill -9``) exits once its
imports are done (a second or two) and it sees so (``PARENT_CHECK_S``), instead of building
on for nobody.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine

from index.columns import from_blob, from_features
from index.items import ItemStore, StoredVectors
from index.snapshots import (
    SnapshotHeader,
    read_snapshot,
    snapshot_file,
    temp_file,
    write_snapshot_chunks,
)
from index.spec import IndexSpec
from index.tables import CollectionRow
from index.vector_index import VectorIndex

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 6 * 3600.0  # a 10M build on two cores takes an hour or more
PARENT_CHECK_S = 0.5  # how often a child looks whether its server is still there


class Projector(Protocol):
    """What places a collection's stored raw features in its space: an aligner version."""

    @property
    def version(self) -> int:
        """The aligner version SQL records for the vectors it makes (0: the implicit one)."""
        ...

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        """One modality's raw features (n, width) -> L2-normalised vectors (n, dim)."""
        ...


def spec_of(row: CollectionRow) -> IndexSpec:
    """The index type and settings SQL records for a collection."""
    return IndexSpec.of(row.index_type, row.index_params)


def current_vectors(stored: StoredVectors, aligner: Projector, dim: int) -> np.ndarray:
    """An item's vectors in the aligner's space: stored ones when that version made them,
    else its stored raw features projected now (a new version needs no re-encoding; rows
    that store none are the projection of their features by their version)."""
    if stored.vector and stored.aligner_version == aligner.version:
        return from_blob(stored.vector, dim)
    rows = len(stored.vector) // (4 * dim) or None
    return aligner.project(stored.modality, from_features(stored.feature, rows))


@dataclass(frozen=True)
class Target:
    """What a build needs of a collection's row: plain values, sent to a child as they are
    (the row as the caller read it, not as SQL holds it by the time the child starts)."""

    collection_id: int
    name: str
    dim: int
    spec: IndexSpec
    epoch: int

    @classmethod
    def of(cls, row: CollectionRow) -> Target:
        return cls(row.id, row.name, row.dim, spec_of(row), row.index_epoch)


def chunks(
    items: ItemStore, target: Target, aligner: Projector, pks: list[int] | None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The items' vectors in the aligner's space, a chunk of rows at a time: (vectors,
    item keys, vectors per item). Raw features are read only of the items another
    aligner version made (they are projected now)."""
    for chunk in items.iter_stored(
        collection_id=target.collection_id, pks=pks, features_unless=aligner.version
    ):
        matrices = [current_vectors(s, aligner, target.dim) for s in chunk]
        counts = np.array([len(m) for m in matrices], dtype=np.int64)
        ids = np.array([s.pk for s in chunk], dtype=np.int64)
        del chunk
        yield np.concatenate(matrices), ids, counts


def add(
    items: ItemStore, target: Target, index: VectorIndex, aligner: Projector, pks: list[int] | None
) -> None:
    """Add the items (every one when ``pks`` is None) to the index, a chunk at a time."""
    for matrix, ids, counts in chunks(items, target, aligner, pks):
        index.upsert(ids, matrix, counts)


def build(items: ItemStore, target: Target, aligner: Projector) -> VectorIndex:
    """A new index of everything SQL holds, in this process."""
    started = time.monotonic()
    index = VectorIndex(target.dim, target.spec, deferred=True)
    if target.spec.type == "ivf":
        _train(items, target, index, aligner)
    add(items, target, index, aligner, None)
    index.finish()  # an IVF not trained above (too few vectors then) trains here
    _built(index, target, "from SQL", started)
    return index


def _built(index: VectorIndex, target: Target, where: str, started: float) -> None:
    log.info(
        "built %s index of %s %s: %d vectors in %.1f s",
        target.spec.type,
        target.name,
        where,
        index.vectors,
        time.monotonic() - started,
    )


def _train(items: ItemStore, target: Target, index: VectorIndex, aligner: Projector) -> None:
    """Train an IVF's lists before the build adds anything, on the sample of the
    collection's vectors (in build order) it would have drawn from all of them, gathered
    by a first pass over the rows; the second pass adds each chunk to its lists. Left
    untrained (an exact buffer that ``finish`` trains) when the collection is too small."""
    total = items.vector_count(target.collection_id, target.dim)
    if total < index.spec.train_at():
        return
    positions = index.training_sample(total)
    sample = np.empty((len(positions), target.dim), dtype=np.float32)
    filled = seen = 0
    for matrix, _, _ in chunks(items, target, aligner, None):
        end = seen + len(matrix)
        stop = int(np.searchsorted(positions, end))
        taken = positions[filled:stop] - seen
        sample[filled : filled + len(taken)] = matrix[taken]
        filled, seen = filled + len(taken), end
        if filled == len(positions):
            break
    # Rows deleted since the count leave the sample short: it trains on what it found.
    index.train_lists(sample[:filled], total)


class BuildFailed(RuntimeError):
    """The child did not build the index (its error is in the message)."""


class BuildStopped(RuntimeError):
    """The build was stopped (``BuildProcess.stop``: the server is shutting down); nothing
    is to be built in its place."""

    def __init__(self) -> None:
        super().__init__(
            "this server is shutting down and builds no index now: retry in a moment (on "
            "another replica, or on this one once it has started again)"
        )


@dataclass(frozen=True)
class _Job:
    """What the parent sends the child on its standard input (pickled)."""

    url: str
    target: Target
    aligner: Any
    out: str


class BuildProcess:
    """Builds collections of at least ``at`` vectors in a child process, reading the
    database at ``url`` (rendered with its password: it goes to the child's standard input,
    not its command line) and writing into ``folder`` (the snapshots' folder)."""

    def __init__(self, url: str, folder: Path, *, at: int) -> None:
        self.url = url
        self.folder = folder
        self.at = at
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopping = False

    def stop(self) -> None:
        """End the builds running in children and start no more: their callers get
        :class:`BuildStopped` at once."""
        with self._lock:
            self._stopping = True
            running = list(self._running)
        for child in running:
            with contextlib.suppress(OSError):
                child.kill()

    @classmethod
    def over(cls, engine: Engine, folder: Path, *, at: int) -> BuildProcess | None:
        """Builds apart for the database of ``engine``; None when another process cannot
        open it (an in-memory SQLite database)."""
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            return None
        return cls(
            url.render_as_string(hide_password=False),
            folder,
            at=at,
        )

    def wanted(self, vectors: int) -> bool:
        """Whether a collection of this many vectors is built apart."""
        return vectors >= self.at

    def build(self, target: Target, aligner: Projector) -> VectorIndex:
        """The index the child built, read into this process; BuildFailed when the child
        failed or wrote nothing usable (the caller builds here then)."""
        # A temp name with this process's pid: a start-up after a crash removes it.
        out = self.folder / f".{snapshot_file(target.collection_id)}.build.{os.getpid()}.tmp"
        job = _Job(self.url, target, aligner, str(out))
        started = time.monotonic()
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            code, stderr = self._run_child(pickle.dumps(job), env, out)
            if code != 0:
                tail = stderr.decode(errors="replace")[-2000:]
                raise BuildFailed(f"exit status {code}: {tail}")
            snap = read_snapshot(out)
            if snap is None:
                raise BuildFailed(f"{out} is missing or unreadable")
            try:
                index = VectorIndex.from_bytes(target.dim, snap.payload, target.spec)
            except ValueError as exc:
                raise BuildFailed(str(exc)) from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildFailed(str(exc)) from exc
        finally:
            # An on_disk IVF maps the file: on Linux its pages stay readable once unlinked,
            # until the index's first snapshot maps its own file.
            with contextlib.suppress(OSError):
                out.unlink()
        _built(index, target, "in a child process", started)
        return index

    def _run_child(self, job: bytes, env: dict[str, str], out: Path) -> tuple[int, bytes]:
        """``python -m index.builds`` given ``job``, writing ``out``: its exit status and
        standard error; BuildStopped when ``stop`` came first or ended it."""
        with self._lock:
            if self._stopping:
                raise BuildStopped()
            child = subprocess.Popen(
                # This process's pid: the child exits once it is gone.
                [sys.executable, "-m", "index.builds", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            self._running.add(child)
        try:
            with child:  # its pipes closed and the child reaped on the way out
                try:
                    _, stderr = child.communicate(job, timeout=CHILD_TIMEOUT_S)
                except BaseException:  # the time limit, or this process interrupted
                    child.kill()
                    raise
        finally:
            with self._lock:
                self._running.discard(child)
            with contextlib.suppress(OSError):
                temp_file(out, child.pid).unlink()  # what a child killed mid-write left
        if self._stopping:
            raise BuildStopped()
        return child.returncode, stderr


def _child() -> None:
    """``python -m index.builds PARENT``: build the index a pickled :class:`_Job` on the
    standard input names, and write it to its ``out`` as a snapshot file; exit once the
    process ``PARENT`` (the server) is gone."""
    from index.db import make_engine, make_sessionmaker

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    threading.Thread(target=_exit_without, args=(int(sys.argv[1]),), daemon=True).start()
    job: _Job = pickle.load(sys.stdin.buffer)
    engine = make_engine(job.url)
    try:
        index = build(ItemStore(make_sessionmaker(engine)), job.target, job.aligner)
    finally:
        engine.dispose()
    header = SnapshotHeader(0, job.target.dim, job.aligner.version, job.target.epoch)
    pieces = index.write_chunks() if index.streams else iter([index.to_bytes()])
    write_snapshot_chunks(Path(job.out), header, pieces)


def _exit_without(parent: int) -> None:
    """End this process once ``parent`` is not its parent any more (it died: the child was
    handed to init or a subreaper). Its file, half written, is removed by the next start."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(3)


if __name__ == "__main__":
    _child()
