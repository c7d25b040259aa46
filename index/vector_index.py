"""A FAISS index of one collection: inner product over L2-normalised vectors.

An item has one vector, or one per segment for a long recording. FAISS ids pack both SQL
keys into one int64: ``item_pk << SEGMENT_BITS | segment``. Every item has a segment 0, so
"which items" and "is this item present" stay questions about the ids alone.
"""

from __future__ import annotations

from typing import NamedTuple

import faiss
import numpy as np

from index.locks import RWLock

SEGMENT_BITS = 16
MAX_SEGMENTS = 1 << SEGMENT_BITS


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Contiguous float32 (n, dim); ValueError on any other shape."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {vectors.shape}")
    return matrix


class IndexHit(NamedTuple):
    """One item found: its SQL key, its best score and the segment that scored it."""

    pk: int
    score: float
    segment: int = 0


def vector_ids(pks: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """FAISS ids of items with ``counts`` segments each (one each by default), in row order."""
    keys = np.ascontiguousarray(pks, dtype=np.int64)
    if counts is None:
        return keys << SEGMENT_BITS
    sizes = np.asarray(counts, dtype=np.int64)
    if np.any(sizes < 1) or np.any(sizes > MAX_SEGMENTS):
        raise ValueError(f"an item has 1 to {MAX_SEGMENTS} segments")
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    segments = np.arange(int(sizes.sum()), dtype=np.int64) - starts
    return (np.repeat(keys, sizes) << SEGMENT_BITS) | segments


def item_of(ids: np.ndarray) -> np.ndarray:
    """The item keys of FAISS ids."""
    return np.asarray(ids, dtype=np.int64) >> SEGMENT_BITS


class VectorIndex:
    """Exact (flat) inner-product search keyed by items; safe to share between threads."""

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = RWLock()

    @property
    def size(self) -> int:
        """How many items the index holds (each has a segment 0)."""
        return int(np.count_nonzero((self._all_ids() & (MAX_SEGMENTS - 1)) == 0))

    @property
    def vectors(self) -> int:
        """How many vectors the index holds (segments included)."""
        with self._lock.read():
            return int(self._index.ntotal)

    def upsert(
        self, pks: np.ndarray, vectors: np.ndarray, counts: np.ndarray | None = None
    ) -> None:
        """Add items' vectors (``counts`` rows per item), replacing what they had before."""
        keys = np.ascontiguousarray(pks, dtype=np.int64)
        ids = vector_ids(keys, counts)
        matrix = as_matrix(vectors, self.dim)
        if len(ids) != len(matrix):
            raise ValueError(f"{len(ids)} vector ids for {len(matrix)} vectors")
        with self._lock.write():
            self._remove_items(keys)
            self._index.add_with_ids(matrix, ids)

    def remove(self, pks: np.ndarray) -> None:
        """Remove items with all their segments (absent ones are ignored)."""
        with self._lock.write():
            self._remove_items(np.ascontiguousarray(pks, dtype=np.int64))

    def _remove_items(self, keys: np.ndarray) -> None:
        if len(keys) == 1:
            pk = int(keys[0])
            sel = faiss.IDSelectorRange(pk << SEGMENT_BITS, (pk + 1) << SEGMENT_BITS)
            self._index.remove_ids(sel)
            return
        ids = self._ids_unlocked()
        doomed = ids[np.isin(item_of(ids), keys)]
        if len(doomed):
            self._index.remove_ids(faiss.IDSelectorBatch(doomed))

    def ids(self) -> np.ndarray:
        """Every item key the index holds, ascending."""
        return np.unique(item_of(self._all_ids()))

    def _all_ids(self) -> np.ndarray:
        with self._lock.read():
            return self._ids_unlocked()

    def _ids_unlocked(self) -> np.ndarray:
        id_map = faiss.downcast_index(self._index).id_map  # type: ignore[attr-defined]
        return faiss.vector_to_array(id_map).astype(np.int64)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[IndexHit]:
        """Top-k items, best first, each once with its best segment; ``allowed`` restricts
        item keys before the cut."""
        q = as_matrix(query, self.dim)
        with self._lock.read():
            total = int(self._index.ntotal)
            params = None
            if allowed is not None:
                ids = self._ids_unlocked()
                permitted = ids[np.isin(item_of(ids), np.asarray(allowed, dtype=np.int64))]
                total = len(permitted)
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBatch(permitted)
            fetch = min(k, total)
            while fetch > 0:
                scores, found = self._index.search(q, fetch, params=params)
                hits = _best_per_item(found[0], scores[0])
                # Segments of one item can crowd the top: widen until k items or all vectors.
                if len(hits) >= k or fetch >= total:
                    return hits[:k]
                fetch = min(total, fetch * 4)
        return []

    def to_bytes(self) -> bytes:
        """The index serialised (FAISS' own format)."""
        with self._lock.read():
            return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, dim: int, data: bytes) -> VectorIndex:
        """The inverse of to_bytes; ValueError when the bytes are not an index of this dim."""
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"not a FAISS index: {exc}") from exc
        if index.d != dim:
            raise ValueError(f"snapshot has dimension {index.d}, expected {dim}")
        return cls(dim, index)


def _best_per_item(ids: np.ndarray, scores: np.ndarray) -> list[IndexHit]:
    """Hits in rank order, each item once (its best segment); FAISS' -1 padding dropped."""
    seen: set[int] = set()
    hits = []
    for vid, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if vid == -1:
            continue
        pk, segment = vid >> SEGMENT_BITS, vid & (MAX_SEGMENTS - 1)
        if pk not in seen:
            seen.add(pk)
            hits.append(IndexHit(pk, float(score), segment))
    return hits


def configure_faiss_threads(threads: int) -> None:
    """Bound FAISS' OpenMP pool: single queries are memory-bound, more threads only contend."""
    faiss.omp_set_num_threads(max(1, threads))
