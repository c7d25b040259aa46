"""A FAISS index of one collection: inner product over L2-normalised vectors, ids = SQL keys."""

from __future__ import annotations

import faiss
import numpy as np

from index.locks import RWLock


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Contiguous float32 (n, dim); ValueError on any other shape."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {vectors.shape}")
    return matrix


class VectorIndex:
    """Exact (flat) inner-product search with int64 ids; safe to share between threads."""

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = RWLock()

    @property
    def size(self) -> int:
        """How many vectors the index holds."""
        with self._lock.read():
            return int(self._index.ntotal)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, replacing any already stored under the same ids."""
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        matrix = as_matrix(vectors, self.dim)
        with self._lock.write():
            self._index.remove_ids(faiss.IDSelectorBatch(keys))
            self._index.add_with_ids(matrix, keys)

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (absent ones are ignored)."""
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock.write():
            self._index.remove_ids(faiss.IDSelectorBatch(keys))

    def ids(self) -> np.ndarray:
        """Every id the index holds."""
        with self._lock.read():
            id_map = faiss.downcast_index(self._index).id_map  # type: ignore[attr-defined]
            return faiss.vector_to_array(id_map).astype(np.int64)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (id, score) pairs, best first; `allowed` restricts ids before the cut."""
        q = as_matrix(query, self.dim)
        with self._lock.read():
            k = min(k, int(self._index.ntotal))
            if allowed is not None:
                k = min(k, len(allowed))
            if k <= 0:
                return []
            params = None
            if allowed is not None:
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            scores, ids = self._index.search(q, k, params=params)
        # FAISS pads with -1 when fewer than k results exist: drop them at the wrapper.
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

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


def configure_faiss_threads(threads: int) -> None:
    """Bound FAISS' OpenMP pool: single queries are memory-bound, more threads only contend."""
    faiss.omp_set_num_threads(max(1, threads))
