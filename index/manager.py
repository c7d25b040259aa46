"""Per-collection FAISS indexes kept in step with SQL: load, replay, rebuild, snapshot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index.snapshots import IndexSnapshot, read_snapshot, remove_snapshot, write_snapshot
from index.store import MetadataStore
from index.tables import CollectionRow
from index.vector_index import VectorIndex
from models.aligner import Aligner

log = logging.getLogger(__name__)


@dataclass
class LiveIndex:
    """A collection's active aligner and index, and the mutex its writers hold across the
    SQL commit and the index update.

    The aligner and the index travel together: vectors in the index were made by exactly
    these heads, so queries projected by them are comparable (invariant 4).
    """

    collection_id: int
    aligner: Aligner
    index: VectorIndex
    writer: threading.Lock = field(default_factory=threading.Lock)
    snapshotting: threading.Lock = field(default_factory=threading.Lock)
    dirty: int = 0
    last_snapshot: float = field(default_factory=time.monotonic)


class IndexManager:
    """Owns every live index of this process; SQL stays the source of truth."""

    def __init__(self, *, store: MetadataStore, root: Path) -> None:
        self.store = store
        self.root = root
        self._live: dict[int, LiveIndex] = {}
        # Reentrant: get() holds it across load() so that one collection is loaded once.
        self._guard = threading.RLock()

    def snapshot_path(self, collection_id: int) -> Path:
        """Where a collection's snapshot lives."""
        return self.root / f"collection-{collection_id}.faiss"

    # -- start-up --------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every collection's index: snapshot + replay, or a rebuild from SQL."""
        for row in self.store.list_collections():
            self.load(row)

    def load(self, row: CollectionRow) -> LiveIndex:
        """Load one collection's index (see load_all)."""
        snap = read_snapshot(self.snapshot_path(row.id))
        index: VectorIndex | None = None
        if snap is not None and snap.seq < row.changes_pruned_seq:
            # A restored old file: the changes since it are gone from the log.
            log.warning("snapshot of %s predates the change log: rebuilding", row.name)
            snap = None
        if snap is not None:
            try:
                index = VectorIndex.from_bytes(row.dim, snap.payload)
                self._replay(row, index, snap.seq)
            except ValueError as exc:
                log.warning("snapshot of %s unusable (%s): rebuilding", row.name, exc)
                index = None
        if index is None:
            index = self._rebuild(row)
        live = LiveIndex(row.id, self.active_aligner(row), index)
        with self._guard:
            self._live[row.id] = live
        return live

    def _replay(self, row: CollectionRow, index: VectorIndex, seq: int) -> None:
        touched, newest = self.store.changed_since(collection_id=row.id, seq=seq)
        if not touched:
            return
        # Idempotent: drop every touched key, then re-add those SQL still holds.
        index.remove(np.fromiter(touched, dtype=np.int64))
        chunks = self.store.iter_vectors(collection_id=row.id, dim=row.dim, pks=sorted(touched))
        for ids, counts, vectors in chunks:
            index.upsert(ids, vectors, counts)
        log.info("replayed %d changes of %s up to seq %d", len(touched), row.name, newest)

    def _rebuild(self, row: CollectionRow) -> VectorIndex:
        index = VectorIndex(row.dim)
        for ids, counts, vectors in self.store.iter_vectors(collection_id=row.id, dim=row.dim):
            index.upsert(ids, vectors, counts)
        log.info("rebuilt index of %s from SQL: %d vectors", row.name, index.size)
        return index

    def active_aligner(self, row: CollectionRow) -> Aligner:
        """The collection's active aligner version, read from SQL."""
        if row.aligner_version == 0:
            # Collections made before aligners were recorded: identity heads, implicitly.
            encoders = {"image": row.model, "text": row.model}
            if row.audio_model:
                encoders["audio"] = row.audio_model
            return Aligner.identity(row.dim, encoders, legacy=True)
        found = self.store.get_aligner(collection_id=row.id, version=row.aligner_version)
        if found is None:
            raise LookupError(f"collection {row.name!r} has no aligner v{row.aligner_version}")
        return Aligner.from_bytes(found.artefact).numbered(found.version)

    # -- runtime -------------------------------------------------------------------------
    def get(self, row: CollectionRow) -> LiveIndex:
        """The live index of a collection, loading it if another process created it."""
        with self._guard:
            live = self._live.get(row.id)
            return live if live is not None else self.load(row)

    def create(self, row: CollectionRow, aligner: Aligner) -> LiveIndex:
        """Start an empty index for a new collection with its first aligner."""
        live = LiveIndex(row.id, aligner, VectorIndex(row.dim))
        with self._guard:
            self._live[row.id] = live
        return live

    def drop(self, collection_id: int) -> None:
        """Forget a collection's index and delete its snapshot."""
        with self._guard:
            self._live.pop(collection_id, None)
        remove_snapshot(self.snapshot_path(collection_id))

    @contextmanager
    def writing(self, live: LiveIndex) -> Iterator[VectorIndex]:
        """Serialise a collection's writers across the SQL commit and the index update.

        Without it, two writers of one item could commit in one order and reach FAISS
        in the other, leaving the index unlike SQL until the next restart.
        """
        with live.writer:
            yield live.index
            live.dirty += 1

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self, live: LiveIndex) -> None:
        """Write a snapshot that reflects exactly the change log up to its seq, then prune it."""
        with live.snapshotting:
            with live.writer:
                seq = self.store.last_seq(live.collection_id)
                payload = live.index.to_bytes()
                live.dirty = 0
                live.last_snapshot = time.monotonic()
            write_snapshot(
                self.snapshot_path(live.collection_id),
                IndexSnapshot(seq=seq, dim=live.index.dim, payload=payload),
            )
            # Only once the snapshot is durable may the changes it covers be forgotten.
            self.store.prune_changes(collection_id=live.collection_id, upto_seq=seq)

    def snapshot_due(self, *, every: int, max_age_s: float) -> None:
        """Snapshot the collections with many changes, or old unsnapshotted ones."""
        with self._guard:
            lives = list(self._live.values())
        now = time.monotonic()
        for live in lives:
            if live.dirty >= every or (live.dirty and now - live.last_snapshot >= max_age_s):
                self.snapshot(live)

    def snapshot_all(self) -> None:
        """Snapshot every collection with unsnapshotted changes (clean shutdown)."""
        self.snapshot_due(every=1, max_age_s=0.0)
