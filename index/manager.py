"""Per-collection FAISS indexes kept in step with SQL: load, replay, rebuild, swap, snapshot.

A live index is a :class:`Space`: an aligner version and the index its heads built, replaced
as one object. When SQL names another aligner version or index epoch (a fine-tune or a
reindex, in this process or another), a new index is built beside the live one from the
stored raw features and swapped in under the writer lock; searches meanwhile keep
answering from the old pair, never from a mix.

Every process follows SQL (invariant 8): :meth:`IndexManager.follow_all`, called every
fraction of a second, applies the changes other processes committed since the position
each live index reflects (``LiveIndex.applied``), and swaps in what SQL names. The change
log cannot skip a write: each collection's writes draw their sequences and commit in one
order (``index.items.lock_collection``). A process's own writes go to its index at once; the
follower passes over them (``LiveIndex.own``). When the log was pruned past an index's
position (another process's snapshot), the index is rebuilt beside the live one.

What an aligner is stays outside: the manager asks for a collection's active one
(``aligner_of``, given by the app) and uses it only as a :class:`Projector`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from index.builds import (
    BuildFailed,
    BuildProcess,
    BuildStopped,
    Projector,
    Target,
    add,
    build,
    spec_of,
)
from index.changes import ChangeLog
from index.collections import CollectionStore
from index.errors import ConflictError, NotFoundError
from index.faults import database_busy
from index.items import ItemStore
from index.snapshots import (
    IndexSnapshot,
    SnapshotHeader,
    peek_header,
    read_snapshot,
    remove_snapshot,
    remove_stale_temp,
    snapshot_file,
    write_snapshot,
    write_snapshot_chunks,
)
from index.tables import CollectionRow
from index.vector_index import VectorIndex

log = logging.getLogger(__name__)

REPORT_EVERY_S = 2.0  # how often a process records its positions in SQL (follow_all)


P = TypeVar("P", bound=Projector)


@dataclass(frozen=True)
class Space(Generic[P]):
    """An aligner version, the index its heads built, and the index epoch it reflects."""

    aligner: P
    index: VectorIndex
    epoch: int = 0

    def matches(self, row: CollectionRow) -> bool:
        """Whether SQL still names this aligner version and epoch."""
        return self.aligner.version == row.aligner_version and self.epoch == row.index_epoch


@dataclass(frozen=True)
class Followed:
    """One collection a process follows (``IndexManager.replication``)."""

    collection_id: int
    position: int  # every change up to this change-log sequence is in the index
    lag_s: float  # since the index last matched SQL


@dataclass
class LiveIndex(Generic[P]):
    """A collection's live :class:`Space` and the mutex its writers hold across the SQL
    commit and the index update (swaps hold it too).

    The aligner and the index travel together: vectors in the index were made by exactly
    these heads, so queries projected by them are comparable (invariant 4). Read
    ``space`` once per request; ``aligner`` and ``index`` are for holders of the writer lock.
    """

    collection_id: int
    space: Space[P]
    writer: threading.Lock = field(default_factory=threading.Lock)
    snapshotting: threading.Lock = field(default_factory=threading.Lock)
    rebuilding: threading.Lock = field(default_factory=threading.Lock)
    dirty: int = 0
    last_snapshot: float = field(default_factory=time.monotonic)
    # A write failed between its SQL commit and its index update: the index may lack a
    # committed change until a replay of the change log repairs it (no snapshot before).
    stale: bool = False
    # Whether the newest snapshot holds the IVF lists the index trained. One that trained
    # since is snapshotted at the next check, not after ``every`` changes: a restart, and a
    # restore of a backup (which copies snapshots), would otherwise train other lists.
    lists_on_disk: bool = False
    # The change-log position the index reflects: every change up to it is in it. ``own``:
    # this process's writes logged after it, already applied (the follower passes them).
    applied: int = 0
    own: set[int] = field(default_factory=set)
    caught_up: float = field(default_factory=time.monotonic)  # when it last matched SQL

    def wrote(self, seq: int, *, after: int | None = None) -> None:
        """A write of this process, in the index and logged at ``seq`` (writer lock held).
        ``after``: the collection's log position just before the write, read under the
        collection's SQL lock (``index.items.Upserted.after``), so every change between it
        and ``seq`` is this write's. When the index held every change up to it, it now holds
        every change up to ``seq``: its position moves on, and the follower's next pass finds
        nothing to read (under a stream of writes it would otherwise read back each one)."""
        if after is not None and after <= self.applied:
            self.reached(seq, matched=False)
        else:
            self.own.add(seq)

    def reached(self, newest: int, *, matched: bool = True) -> None:
        """Every change up to ``newest`` is in the index (writer lock held). ``matched``: the
        index matches SQL now, aligner and epoch included (a follower's pass); a process's
        own write says nothing of those, so it leaves the replication lag's clock alone."""
        self.applied = max(self.applied, newest)
        self.own = {s for s in self.own if s > self.applied}
        if matched:
            self.caught_up = time.monotonic()

    @property
    def aligner(self) -> P:
        """The active aligner (stable while the writer lock is held)."""
        return self.space.aligner

    @property
    def index(self) -> VectorIndex:
        """The live index (stable while the writer lock is held)."""
        return self.space.index


def _newer_kept(path: Path, seq: int, space: Space[Any]) -> bool:
    """Whether the snapshot at ``path`` is of this space and newer than ``seq``: another
    process sharing the folder wrote it, and it is kept."""
    kept = peek_header(path)
    return bool(
        kept
        and kept.seq > seq
        and (kept.aligner_version, kept.epoch) == (space.aligner.version, space.epoch)
    )


class IndexManager(Generic[P]):
    """Owns every live index of this process; SQL stays the source of truth.

    ``aligner_of(row)`` is the collection's active aligner as SQL names it (the app decodes
    the recorded artefact); the manager asks for it whenever it loads or swaps an index.
    """

    def __init__(
        self,
        *,
        collections: CollectionStore,
        items: ItemStore,
        changes: ChangeLog,
        aligner_of: Callable[[CollectionRow], P],
        root: Path,
        follow: bool = True,
        replica: str = "",
        released: Callable[[], object] = lambda: None,
        builds: BuildProcess | None = None,
    ) -> None:
        self.collections = collections
        self.items = items
        self.changes = changes
        self.aligner_of = aligner_of
        self.root = root
        # False in a worker process: it changes SQL and leaves swapping to the API process.
        self.follow = follow
        # This process's name in the log's positions (index.changes.ChangeLog.report); ""
        # reports none (a manager of one process's tests).
        self.replica = replica
        # Called once a build's transient memory is freed (the app gives the C allocator's
        # free pages back to the system: app.memory.trim).
        self.released = released
        # Where large collections' indexes are built (None: always in this process).
        self.builds = builds
        self._reported = 0.0
        self._live: dict[int, LiveIndex[P]] = {}
        # Reentrant: get() holds it across load() so that one collection is loaded once.
        self._guard = threading.RLock()

    def snapshot_path(self, collection_id: int) -> Path:
        """Where a collection's snapshot lives."""
        return self.root / snapshot_file(collection_id)

    # -- start-up --------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every collection's index: snapshot + replay, or a rebuild from SQL."""
        if self.root.is_dir() and (removed := remove_stale_temp(self.root)):
            log.warning("removed %d temp files of snapshots a killed process left", removed)
        for row in self.collections.list():
            self.load(row)

    def load(self, row: CollectionRow) -> LiveIndex[P]:
        """Load one collection's index (see load_all)."""
        aligner = self.aligner_of(row)
        snap = read_snapshot(self.snapshot_path(row.id))
        index: VectorIndex | None = None
        lists = False
        applied = 0
        space = {"aligner_version": row.aligner_version, "epoch": row.index_epoch}
        why = snap and snap.header.unusable(pruned_seq=row.changes_pruned_seq, **space)
        if why:
            # An old file (copied back by hand), or one a reindex has since replaced.
            log.warning("snapshot of %s unusable (%s): rebuilding", row.name, why)
        elif snap is not None:
            try:
                index = VectorIndex.from_bytes(row.dim, snap.payload, spec_of(row))
                on_disk = bool(index.lists)  # the replay may train an IVF: not on disk
                applied = self._replay(row, index, snap.seq, aligner)
                lists = on_disk
            except ValueError as exc:
                log.warning("snapshot of %s unusable (%s): rebuilding", row.name, exc)
                index = None
        built = index is None
        if index is None:
            applied = self.changes.last_seq(row.id)  # before the build reads: the follower
            index = self._build(row, aligner)  # replays what commits meanwhile
        live = LiveIndex(
            row.id, Space(aligner, index, row.index_epoch), lists_on_disk=lists, applied=applied
        )
        # A rebuilt index is snapshotted soon (snapshot_due), so the next start loads it.
        live.dirty = int(built)
        with self._guard:
            self._live[row.id] = live
        self.released()
        return live

    def _replay(
        self,
        row: CollectionRow,
        index: VectorIndex,
        seq: int,
        aligner: P,
        skip: set[int] | frozenset[int] = frozenset(),
    ) -> int:
        """Apply the log after ``seq`` (but the changes in ``skip``); the newest seq seen."""
        touched, newest = self.changes.since(collection_id=row.id, seq=seq, skip=skip)
        self._apply(row, index, aligner, touched)
        if touched:
            log.info("replayed %d changes of %s up to seq %d", len(touched), row.name, newest)
        return newest

    def _apply(self, row: CollectionRow, index: VectorIndex, aligner: P, touched: set[int]) -> None:
        """Idempotent: drop every touched key, then re-add those SQL still holds."""
        if touched:
            index.remove(np.fromiter(touched, dtype=np.int64))
            self._add(row, index, aligner, sorted(touched))

    def _build(self, row: CollectionRow, aligner: P) -> VectorIndex:
        """A new index of everything SQL holds (``index.builds``): in a child process when
        the collection is large enough (``builds``), else, or when the child fails, here."""
        target = Target.of(row)
        if self.builds is not None and self._apart(row):
            try:
                return self.builds.build(target, aligner)
            except BuildFailed as exc:
                log.warning(
                    "building the index of %s in a child process failed: building it in "
                    "this one (%s)",
                    row.name,
                    exc,
                )
        return build(self.items, target, aligner)

    def _apart(self, row: CollectionRow) -> bool:
        """Whether the collection's index is built in a child: its items counted first (an
        index's count, quick at any size), its vectors (a recording's segments each: a read
        of every row) only when the items alone are too few."""
        assert self.builds is not None
        return self.builds.wanted(self.items.count(row.id)) or self.builds.wanted(
            self.items.vector_count(row.id, row.dim)
        )

    def _add(
        self, row: CollectionRow, index: VectorIndex, aligner: P, pks: list[int] | None
    ) -> None:
        add(self.items, Target.of(row), index, aligner, pks)

    # -- runtime -------------------------------------------------------------------------
    def ready(self, row: CollectionRow) -> LiveIndex[P] | None:
        """The live index when it serves ``row`` as it is (nothing to load or swap first),
        else None; never waits."""
        live = self._live.get(row.id)
        ready = live is not None and not live.stale and live.space.matches(row)
        return live if ready else None

    def get(self, row: CollectionRow, *, wait: bool = False) -> LiveIndex[P]:
        """The live index of a collection (loaded if another process created it), brought
        to the aligner version and epoch ``row`` names.

        Bringing it there builds a new index beside the live one and swaps. The request
        that notices does the work; others arriving meanwhile keep the old pair, unless
        ``wait`` (an activation that must serve the new version when it returns).
        """
        with self._guard:
            live = self._live.get(row.id)
            if live is None:
                return self.load(row)
        if live.stale:
            with live.writer:
                self._repair(live)
        if live.space.matches(row) or not self.follow:
            return live
        if not live.rebuilding.acquire(blocking=wait):
            return live
        try:
            if not live.space.matches(row):
                self._swap(live, row)
        finally:
            live.rebuilding.release()
        return live

    def _swap(self, live: LiveIndex[P], row: CollectionRow) -> None:
        # SQL as it is now, not the row the caller read earlier (or a kept one): a request
        # that read it before another one swapped must not swap the index back.
        row = self.collections.get_by_id(row.id)
        if live.space.matches(row):
            return
        if not self._rebuild(live, row):
            return
        # Rebuilds are the expensive path: make this one durable now, not at some later
        # tick (a big snapshot then would stall the searches running at that moment).
        self.snapshot(live)
        log.info(
            "collection %s now serves aligner v%d, index epoch %d",
            row.name,
            live.aligner.version,
            row.index_epoch,
        )

    def _rebuild(self, live: LiveIndex[P], row: CollectionRow) -> bool:
        """A new index from SQL beside the live one (searches go on meanwhile), then the
        changes committed during the build, and the swap; False when SQL moved to another
        epoch during the build, or the build was stopped (nothing swapped)."""
        aligner = self.aligner_of(row)
        seq = self.changes.last_seq(row.id)
        try:
            index = self._build(row, aligner)
        except BuildStopped:
            # Shutting down (index.builds): the old pair serves to the end.
            log.info("collection %s: rebuild stopped, the server is shutting down", row.name)
            return False
        if self.changes.epoch(row.id) != row.index_epoch:
            # A new epoch (a migration's switch) landed during the build: what it read may
            # be partly of the next space. Not swapped in; the next pass builds that epoch.
            log.info("collection %s moved on during a rebuild: not swapped in", row.name)
            return False
        with live.writer:
            # Writes that landed during the build, this process's too (they went to the old
            # index, projected by the old heads).
            newest = self._replay(row, index, seq, aligner)
            live.space = Space(aligner, index, row.index_epoch)
            live.own = set()
            live.applied = 0
            live.reached(max(seq, newest))
            live.dirty += 1
        del index
        self.released()  # the old index too, unless a search still holds it
        return True

    # -- following SQL (invariant 8) -----------------------------------------------------
    def follow_all(self) -> None:
        """Bring every live index to SQL: the writes other processes committed, and the
        aligner version and index epoch SQL names (built here, off the request path). A
        collection another process deleted is forgotten."""
        if not self.follow:
            return
        with self._guard:
            lives = list(self._live.values())
        if not lives:
            return
        rows = {r.id: r for r in self.collections.list()}
        heads = self.changes.heads()
        for live in lives:
            row = rows.get(live.collection_id)
            if row is None:
                self.drop(live.collection_id)
            elif not live.space.matches(row):
                self.get(row)  # one thread builds and swaps; a request never waits for it
            elif max(heads.get(row.id, 0), row.changes_pruned_seq) > live.applied:
                self.catch_up(live, row)
            else:
                live.caught_up = time.monotonic()
        now = time.monotonic()
        if self.replica and now - self._reported >= REPORT_EVERY_S:
            followed = [live for live in lives if live.collection_id in rows]
            self.changes.report(
                self.replica, {live.collection_id: live.applied for live in followed}
            )
            self._reported = now

    def stop_builds(self) -> None:
        """Stop the builds running in child processes, and start none (a shutdown)."""
        if self.builds is not None:
            self.builds.stop()

    def leave(self) -> None:
        """This process stops following (a clean shutdown): pruning stops waiting for it."""
        if self.replica:
            self.changes.forget_replica(self.replica)

    def replication(self) -> list[Followed]:
        """Where each collection this process follows stands: its change-log position and
        the seconds since it last matched SQL (its lag, at most: about the follow interval
        when healthy), most behind first."""
        with self._guard:
            lives = list(self._live.values())
        now = time.monotonic()
        followed = [Followed(v.collection_id, v.applied, now - v.caught_up) for v in lives]
        return sorted(followed, key=lambda f: -f.lag_s)

    def catch_up(self, live: LiveIndex[P], row: CollectionRow) -> None:
        """Apply what the log holds after the index's position; rebuild when it was pruned
        past it (another process's snapshot)."""
        with live.writer:
            if self._caught_up(live, row):
                return
        log.warning(
            "collection %s: the change log was pruned past this process's position %d: "
            "rebuilding its index from SQL",
            row.name,
            live.applied,
        )
        self._rebuild(live, row)

    def _caught_up(self, live: LiveIndex[P], row: CollectionRow) -> bool:
        """``catch_up`` under the writer lock; False when the log no longer covers the gap."""
        touched, newest = self.changes.since(collection_id=row.id, seq=live.applied, skip=live.own)
        # Read after the changes: a prune that came first shows here (a later one took
        # nothing this read needed).
        if self.changes.pruned_seq(row.id) > live.applied:
            return False
        if self.changes.epoch(row.id) != live.space.epoch:
            return True  # a new epoch (a migration's switch): the next pass swaps instead
        self._apply(row, live.index, live.aligner, touched)
        if self.changes.epoch(row.id) != live.space.epoch:
            # The epoch moved while the items were read: some may be of the next space (a
            # migration's vectors). Keep them out of this index; the next pass rebuilds.
            if touched:
                live.index.remove(np.fromiter(touched, dtype=np.int64))
            return True
        live.reached(newest)
        if touched:
            live.dirty += 1
        return True

    def create(self, row: CollectionRow, aligner: P) -> LiveIndex[P]:
        """Start an empty index for a new collection with its first aligner."""
        index = VectorIndex(row.dim, spec_of(row))
        live = LiveIndex(row.id, Space(aligner, index, row.index_epoch))
        with self._guard:
            self._live[row.id] = live
        return live

    def drop(self, collection_id: int) -> None:
        """Forget a collection's index and delete its snapshot."""
        with self._guard:
            self._live.pop(collection_id, None)
        remove_snapshot(self.snapshot_path(collection_id))

    @contextmanager
    def writing(self, live: LiveIndex[P]) -> Iterator[VectorIndex]:
        """Serialise a collection's writers across the SQL commit and the index update.

        Without it, two writers of one item could commit in one order and reach FAISS
        in the other, leaving the index unlike SQL until the next restart.
        """
        with live.writer:
            try:
                yield live.index
            except (NotFoundError, ConflictError):
                raise  # refused before any commit
            except BaseException as exc:
                if database_busy(exc):
                    raise  # SQLite's write lock not had: nothing committed
                # The SQL commit may have landed before the index update failed: a later
                # snapshot must not prune that change from the log before a replay.
                live.stale = True
                log.error(
                    "a write to collection %d failed: the index will be repaired from "
                    "the change log",
                    live.collection_id,
                )
                raise
            live.dirty += 1

    def _repair(self, live: LiveIndex[P]) -> None:
        """Replay every change the log still holds into a stale index (the writer lock
        held). The log is pruned only up to a snapshot, and no snapshot is written while
        the index is stale, so the failed write's change is there; replay is idempotent."""
        if not live.stale:
            return
        row = self.collections.get_by_id(live.collection_id)
        newest = self._replay(row, live.index, row.changes_pruned_seq, live.aligner)
        live.own = set()
        live.reached(newest)
        live.stale = False
        live.dirty += 1
        log.warning("collection %s: index repaired from the change log", row.name)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self, live: LiveIndex[P]) -> None:
        """Write a snapshot that reflects exactly the change log up to its seq, then prune it."""
        with live.snapshotting:
            with live.writer:
                self._repair(live)  # raises while it cannot: then nothing is pruned
                # The snapshot's seq is the position the index reflects, other processes'
                # writes included: not the log's head, which may hold changes it lacks.
                try:
                    row = self.collections.get_by_id(live.collection_id)
                except NotFoundError:
                    return  # another process deleted it: the follower forgets it
                if not self._caught_up(live, row):
                    return  # the follower rebuilds it first
                seq = live.applied
                space = live.space
                if space.index.streams:  # an on-disk index: written and mapped, writes held
                    self._snapshot_streamed(live, seq)
                    return
                payload = space.index.to_bytes()
                lists = bool(space.index.lists)
                live.dirty = 0
                live.last_snapshot = time.monotonic()
            path = self.snapshot_path(live.collection_id)
            if _newer_kept(path, seq, space):
                return
            write_snapshot(
                path,
                IndexSnapshot(
                    seq=seq,
                    dim=space.index.dim,
                    payload=payload,
                    aligner_version=space.aligner.version,
                    epoch=space.epoch,
                ),
            )
            live.lists_on_disk = lists
            # Only once the snapshot is durable may the changes it covers be forgotten, and
            # only those every live process has applied (a slower one replays the rest).
            slowest = self.changes.slowest(live.collection_id, excluding=self.replica)
            upto = seq if slowest is None else min(seq, slowest)
            self.changes.prune(collection_id=live.collection_id, upto_seq=upto)
        del payload
        self.released()  # the serialised copies of the index

    def _snapshot_streamed(self, live: LiveIndex[P], seq: int) -> None:
        """:meth:`snapshot` of an index whose snapshot is its storage (an on_disk IVF): the
        lists are written merged with the writes since, a list at a time, under the writer
        lock (the pieces must be of one state), and the index then maps the new file (the
        in-memory writes and the dead go). The caller holds both locks."""
        space = live.space
        path = self.snapshot_path(live.collection_id)
        if _newer_kept(path, seq, space):
            return
        header = SnapshotHeader(seq, space.index.dim, space.aligner.version, space.epoch)
        write_snapshot_chunks(path, header, space.index.write_chunks())
        written = read_snapshot(path)
        if written is None:
            raise OSError(f"snapshot {path} unreadable just after writing it: check the disk")
        if written.header != header:  # another process's, renamed over it meanwhile
            raise OSError(f"snapshot {path} was replaced just after it was written: not adopted")
        space.index.adopt(written.payload)
        live.dirty = 0
        live.last_snapshot = time.monotonic()
        live.lists_on_disk = True
        slowest = self.changes.slowest(live.collection_id, excluding=self.replica)
        upto = seq if slowest is None else min(seq, slowest)
        self.changes.prune(collection_id=live.collection_id, upto_seq=upto)
        self.released()

    def snapshot_due(self, *, every: int, max_age_s: float) -> None:
        """Snapshot the collections with many changes, or old unsnapshotted ones."""
        with self._guard:
            lives = list(self._live.values())
        now = time.monotonic()
        for live in lives:
            old = live.dirty and now - live.last_snapshot >= max_age_s
            trained = live.index.lists and not live.lists_on_disk
            if live.stale or live.dirty >= every or old or trained:
                self.snapshot(live)

    def snapshot_all(self) -> None:
        """Snapshot every collection with unsnapshotted changes (clean shutdown)."""
        self.snapshot_due(every=1, max_age_s=0.0)
