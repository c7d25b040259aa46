"""A FAISS index of one collection: inner product over L2-normalised vectors.

An item has one vector, or one per segment for a long recording. Vector ids pack both SQL
keys into one int64: ``item_pk << SEGMENT_BITS | segment``; every item has a segment 0.

FAISS itself holds vectors under *labels* (their insertion position); ``_labels`` maps a
label to its vector id, or to ``DEAD`` once deleted. Deleting masks labels, which works on
every index type (HNSW graphs cannot remove nodes); flat and IVF indexes are compacted once
a quarter of them is dead, HNSW by a reindex. An IVF index searches exactly until it holds
enough vectors to train its lists on the collection's own data.

A filter names the items a search may return. A selective one (few vectors) is answered
by looking its keys up in the label map sorted by owner and scoring just those rows:
flat and HNSW indexes keep the float32 vectors, a trained IVF decodes its codes through a
direct map (so its scores are those an exhaustive IVF search gives) unless they are too
many to decode faster than its lists are scanned. A looser filter becomes a bitmap over the
labels for FAISS's own search.

A flat index answers one query by scanning a float16 copy of its vectors (half the bytes
of memory to stream, which is what bounds an exhaustive scan), then rescoring the
candidates from the float32 vectors: ids and scores are those of an exact float32 search
(see :meth:`VectorIndex._scan_exact`).

An IVF ``on_disk`` keeps its lists in the snapshot file: loaded, they are searched in place
in the mapped file (page cache the kernel can reclaim, not the process's own memory), and
the writes since go to an in-memory IVF of the same centroids (the *delta*), searched
beside them. Deletions are masked; the next snapshot writes lists and delta merged, the
dead left out, one list at a time (never the index whole in memory), and the index then
maps the new file (:meth:`VectorIndex.write_chunks`, :meth:`VectorIndex.adopt`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import faiss
import numpy as np

from index.locks import RWLock, WouldBlock
from index.spec import IndexSpec

SEGMENT_BITS = 16
MAX_SEGMENTS = 1 << SEGMENT_BITS
SEGMENT_MASK = MAX_SEGMENTS - 1
DEAD = -1  # deleted, still in the FAISS index (masked at search)
GONE = -2  # deleted and removed from an IVF's lists
COMPACT_SHARE = 0.25
COMPACT_MIN = 1024
# Filters keeping at most this many vectors (or this share) are searched exhaustively:
# graph walks and probed lists miss too much when most of the collection is excluded.
SELECTIVE_MAX = 4096
SELECTIVE_SHARE = 0.02
# Labels added since the owner-sorted label map was built are looked up in a sorted tail of
# their own; past this many (or an eighth of the map) the two are merged.
OWNER_TAIL_MAX = 16384
# Filters of more keys than a sixteenth of the labels are matched by one isin pass instead
# (bench/filtered.py times both).
LOOKUP_SHARE = 16
# A trained IVF decodes a selective filter's rows one by one (about 5 us each here), while
# its exhaustive scan with a bitmap skips an excluded code in about 20 ns: it decodes up to
# one row in this many, and scans its lists with the bitmap past that (bench/filtered.py).
IVF_DECODE_SHARE = 256
# An IVF's direct map (label -> list and offset, a hash table) costs about this per vector.
DIRECT_MAP_BYTES = 40
TRAIN_POINTS_PER_LIST = 64
TRAIN_ITERATIONS = 10
PARALLEL_ADD = 1024  # adds at least this large use the build threads
# A float16 copy of x differs from x by at most 2**-11 of each component rounded to
# nearest (2**-10 truncated: the bound used, whichever way FAISS rounds), so a float16
# score is within 2**-10 * |x| * |q| of the float32 one, plus the float32 sums' own
# rounding (at most dim * 2**-24 * |x| * |q| for each of the two).
HALF_ROUNDING = 2.0**-10
SUM_ROUNDING = 2.0**-24
HALF_MAX_NORM = 1e4  # float16 overflows past 65504: such vectors are scanned in float32
RESCORE_EXTRA = 32  # candidates rescored beyond k on the first try
FORMAT = b"MMR-VECTOR-INDEX 1\n"
HEADER_SCAN = 1 << 16  # bytes after FORMAT in which a serialised index's header line ends
LISTS_TAG = b"ilar"  # FAISS' ArrayInvertedLists: the last part of a serialised IVF

_HASHTABLE = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]

_threads = {"search": 1, "build": 0}


def configure_faiss_threads(search: int, build: int = 0) -> None:
    """OpenMP threads of FAISS: one per single query (memory-bound: more threads only
    contend), ``build`` (0 = one per core) for training and bulk adds.

    OpenMP's thread count is per calling thread, so searches and builds set it themselves.
    """
    _threads["search"] = max(1, search)
    _threads["build"] = max(0, build)


@contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """Run FAISS calls of this thread on ``count`` OpenMP threads (0 = one per core)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


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
    """Vector ids of items with ``counts`` segments each (one each by default), in row order."""
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
    """The item keys of vector ids (negative for dead labels)."""
    return np.asarray(ids, dtype=np.int64) >> SEGMENT_BITS


class VectorIndex:
    """Inner-product search keyed by items, of any :class:`IndexSpec` type; thread-safe.

    ``deferred``: a bulk build; an IVF trains once, in :meth:`finish`, on everything added.
    """

    def __init__(self, dim: int, spec: IndexSpec | None = None, *, deferred: bool = False) -> None:
        self.dim = dim
        self.spec = spec or IndexSpec()
        self.spec.check(dim)
        self._lock = RWLock()
        self._deferred = deferred
        self._reset()
        self._lists = 0  # inverted lists of a trained IVF
        self._writes = 0  # bumps invalidate the cached live bitmap
        self._live_bits: tuple[int, np.ndarray] | None = None
        self._owners: _OwnerLookup | None = None
        self._index = self._empty()
        self._half: Any = self._empty_half()  # flat only: the float16 copy scanned
        self._max_norm = 0.0  # of every vector added (bounds the float16 error)
        self._base: Any = None  # on_disk: the IVF whose lists are views of a mapped snapshot
        self._mapped: Any = None  # the buffer those views point into, kept alive with them
        self._shell: bytes | None = None  # on_disk: the mapped IVF serialised without lists

    def _reset(self) -> None:
        """Forget every label (the FAISS index is replaced alongside)."""
        self._labels = np.empty(0, dtype=np.int64)  # capacity grows by doubling
        self._n = 0  # labels used
        self._live = 0  # live vectors
        self._items = 0  # live items (live segment-0 vectors)
        self._dead = 0  # DEAD labels still inside the FAISS index
        self._owners = None  # labels are renumbered: the sorted map is rebuilt

    def _empty(self) -> faiss.Index:
        if self.spec.type == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, self.spec.m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = self.spec.ef_construction
            return graph
        return faiss.IndexFlatIP(self.dim)  # flat, and an IVF until it is trained

    def _empty_half(self) -> Any:
        if self.spec.type != "flat":
            return None
        return faiss.IndexScalarQuantizer(
            self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )

    # -- counts ----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """How many items the index holds."""
        return self._items

    @property
    def vectors(self) -> int:
        """How many live vectors the index holds (segments included)."""
        return self._live

    @property
    def deleted(self) -> int:
        """Deleted vectors still taking room (masked); a reindex or compaction drops them."""
        return self._dead

    @property
    def lists(self) -> int:
        """Inverted lists of a trained IVF; 0 for any other index."""
        return self._lists

    @property
    def trained(self) -> bool:
        """False for an IVF still searching exactly (too few vectors to train on so far)."""
        return self.spec.type != "ivf" or self._lists > 0

    def describe(self) -> dict[str, Any]:
        """Type, settings (with the list count an IVF chose), counts and estimated memory."""
        params = self.spec.params()
        if self.spec.type == "ivf":
            params["nlist"] = self._lists or None
        return {
            "type": self.spec.type,
            "params": params,
            "size": self._items,
            "vectors": self._live,
            "deleted": self._dead,
            "trained": self.trained,
            "bytes": self._memory(),
        }

    def scan_size(self, k: int = 10) -> int:
        """About how many stored vectors the first pass of an unfiltered top-``k`` query
        is compared with: what a search costs, for a caller choosing where to run it."""
        if self.spec.type == "hnsw":  # candidates x neighbours per node on the base layer
            return min(self._live, 2 * self.spec.m * max(self.spec.ef_search, k))
        if self._lists:  # the centroids, then the probed lists' share of the vectors
            probed = min(self.spec.nprobe, self._lists)
            return self._lists + -(-self._live * probed // self._lists)
        return self._live

    def _memory(self) -> int:
        stored = self._live + self._dead
        if self.spec.type == "ivf" and not self._lists:
            return stored * (4 * self.dim + 8)
        centroids = self._lists * self.dim * 4
        mapped = self._lists and not self.spec.on_disk  # a direct map: see _trained
        per_vector = self.spec.bytes_per_vector(self.dim) + (DIRECT_MAP_BYTES if mapped else 0)
        owners = 0 if self._owners is None else 16 * self._owners.end  # selective filters'
        if self._base is not None:  # the mapped lists are the page cache's, not ours
            delta = int(self._index.ntotal) * self.spec.bytes_per_vector(self.dim)
            return 2 * centroids + delta + 8 * self._n + owners  # the delta's centroids
        return stored * per_vector + centroids + owners

    @property
    def mapped(self) -> bool:
        """Whether the lists are searched in a mapped snapshot file (an on_disk IVF)."""
        return self._base is not None

    @property
    def streams(self) -> bool:
        """Whether snapshots of this index are written a list at a time and then mapped
        (:meth:`write_chunks`, :meth:`adopt`): a trained on_disk IVF."""
        return self.spec.on_disk and self._lists > 0

    # -- writes ----------------------------------------------------------------------------
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
            self._append(ids, matrix)
            self._maintain()

    def remove(self, pks: np.ndarray) -> None:
        """Remove items with all their segments (absent ones are ignored)."""
        with self._lock.write():
            self._remove_items(np.ascontiguousarray(pks, dtype=np.int64))
            self._maintain()

    def finish(self) -> None:
        """End a deferred bulk build: train an IVF on everything added, compact."""
        with self._lock.write():
            self._deferred = False
            self._maintain()

    def _remove_items(self, keys: np.ndarray) -> None:
        if not len(keys) or not self._n:
            return
        labels = self._labels[: self._n]
        owners = labels >> SEGMENT_BITS
        hit = owners == keys[0] if len(keys) == 1 else np.isin(owners, keys)
        doomed = np.flatnonzero(hit)
        if not len(doomed):
            return
        self._items -= int(np.count_nonzero((labels[doomed] & SEGMENT_MASK) == 0))
        labels[doomed] = DEAD
        self._dead += len(doomed)
        self._live -= len(doomed)
        self._writes += 1

    def _append(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        start, count = self._n, len(ids)
        if start + count > len(self._labels):
            grown = np.empty(max(start + count, 2 * len(self._labels), 1024), dtype=np.int64)
            grown[:start] = self._labels[:start]
            self._labels = grown
        threads = _threads["build"] if count >= PARALLEL_ADD else _threads["search"]
        with omp_threads(threads):
            if self._lists:
                self._index.add_with_ids(matrix, np.arange(start, start + count, dtype=np.int64))
            else:
                self._index.add(matrix)  # flat and HNSW number vectors in insertion order
            if self._half is not None:
                self._half.add(matrix)
        if count and self._half is not None:
            norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
            self._max_norm = max(self._max_norm, float(norms.max()))
        self._labels[start : start + count] = ids
        self._n += count
        self._live += count
        self._items += int(np.count_nonzero((ids & SEGMENT_MASK) == 0))
        self._writes += 1

    def _maintain(self) -> None:
        if self._deferred:
            return
        if self.spec.type == "ivf" and not self._lists and self._live >= self.spec.train_at():
            self._train()
        elif self._base is not None:
            return  # mapped lists are read-only: the next snapshot leaves the dead out
        elif self.spec.type != "hnsw" and self._dead >= max(COMPACT_MIN, COMPACT_SHARE * self._n):
            self._compact()

    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Live labels' vector ids and vectors, from a flat index (lossless)."""
        keep = np.flatnonzero(self._labels[: self._n] >= 0)
        vectors = self._index.reconstruct_n(0, self._n)[keep]
        return self._labels[keep].copy(), vectors

    def _compact(self) -> None:
        if self._lists:  # IVF: drop dead codes from their lists; labels stay put
            dead = np.flatnonzero(self._labels[: self._n] == DEAD).astype(np.int64)
            self._index.remove_ids(_dead_selector(self._index, dead))
            self._labels[dead] = GONE
        else:  # flat: rebuild from the live rows, labels renumbered
            ids, vectors = self._live_rows()
            self._index = self._empty()
            self._half = self._empty_half()
            self._reset()
            self._append(ids, vectors)
        self._dead = 0
        self._writes += 1

    def training_sample(self, total: int) -> np.ndarray:
        """Which of ``total`` vectors (positions in the order they are added, ascending) an
        IVF trains on: the same ones whether it trains on all of them at once or on a
        sample a streamed build gathers first (:meth:`train_lists`)."""
        lists = self.spec.lists_for(total)
        take = min(total, TRAIN_POINTS_PER_LIST * lists)
        return np.sort(np.random.default_rng(0).choice(total, take, replace=False))

    def train_lists(self, sample: np.ndarray, total: int) -> None:
        """A streamed build's training, before its adds (an empty, untrained IVF): lists
        sized for ``total`` vectors, trained on ``sample`` (the vectors at
        :meth:`training_sample`'s positions); the adds then go to the lists a chunk at a
        time. Nothing is done when the sample is too small to train those lists on."""
        matrix = as_matrix(sample, self.dim)
        lists = self.spec.lists_for(total)
        with self._lock.write():
            if self.spec.type != "ivf" or self._lists or self._n:
                raise ValueError("only an empty, untrained IVF index trains before its adds")
            if len(matrix) < max(lists, 1):
                return
            self._index, self._lists = self._trained(matrix, lists), lists

    def _trained(self, sample: np.ndarray, lists: int) -> faiss.Index:
        """An empty IVF of ``lists`` lists trained on ``sample``."""
        ivf = faiss.index_factory(self.dim, self.spec.factory(lists), faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(ivf).cp.niter = TRAIN_ITERATIONS
        # Selective filters decode their rows by label (reconstruct_batch); a hash table,
        # as labels stay put while compaction removes codes. Not an on_disk IVF's: the map
        # would be read into memory whole, and its mapped lists split from the delta's
        # (selective filters scan its lists with a bitmap instead).
        if not self.spec.on_disk:
            faiss.extract_index_ivf(ivf).set_direct_map_type(_HASHTABLE)
        if isinstance(ivf, faiss.IndexIVFPQ):
            # Polysemous codes (Hamming pre-filtering) are never used here, and their
            # training took 47 of the 48 seconds of a 20k-vector build.
            ivf.do_polysemous_training = False  # type: ignore[attr-defined]
        with omp_threads(_threads["build"]):
            ivf.train(sample)
        return ivf

    def _train(self) -> None:
        """Turn the exact buffer into an IVF trained on the collection's own vectors."""
        ids, vectors = self._live_rows()
        lists = self.spec.lists_for(len(vectors))
        ivf = self._trained(vectors[self.training_sample(len(vectors))], lists)
        self._index, self._lists = ivf, lists
        self._reset()
        self._append(ids, vectors)

    # -- reads -----------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Every item key the index holds, ascending."""
        with self._lock.read():
            labels = self._labels[: self._n]
            return np.unique(item_of(labels[labels >= 0]))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None, *, wait: bool = True
    ) -> list[IndexHit]:
        """Top-k items, best first, each once with its best segment; ``allowed`` restricts
        item keys before the cut (every type returns min(k, allowed items) of them).
        Without ``wait``, WouldBlock instead of waiting for a write to finish or widening
        the search past its first pass (see :meth:`scan_size`)."""
        q = as_matrix(query, self.dim)
        faiss.omp_set_num_threads(_threads["search"])
        with self._lock.read(wait=wait):
            rows = None if allowed is None else self._rows_of(allowed)
            exhaustive = rows is not None and self._selective(len(rows))
            if rows is not None and exhaustive and self._decodes(len(rows)):
                return self._score_rows(q[0], k, rows) if k > 0 else []
            mask = self._mask(rows)
            if mask is None:
                total, items, bits = self._live, self._items, None
            else:
                total, items, bits = mask
            want = min(k, items)
            if want <= 0:
                return []
            return self._search(q, k, want, total, bits, exhaustive=exhaustive, wait=wait)

    def _selective(self, vectors: int) -> bool:
        return vectors <= max(SELECTIVE_MAX, SELECTIVE_SHARE * self._live)

    def _decodes(self, vectors: int) -> bool:
        """Whether scoring these rows one by one beats scanning (only a trained IVF may not)."""
        if not self._lists:
            return True
        return not self.spec.on_disk and vectors * IVF_DECODE_SHARE <= self._n

    def search_many(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's top ``k`` vectors as item keys and scores, (m, k) arrays with -1 and
        -inf where there are fewer: one pass of the index as it is (approximate for hnsw and
        a trained ivf, never widened), on the build threads. What pairwise comparisons of a
        whole collection (index.pairs) ask of it."""
        q = as_matrix(queries, self.dim)
        none = (np.full((len(q), 0), -1, dtype=np.int64), np.zeros((len(q), 0), np.float32))
        with self._lock.read(), omp_threads(_threads["build"]):
            mask = self._mask(None if allowed is None else self._rows_of(allowed))
            total, bits = (self._live, None) if mask is None else (mask[0], mask[2])
            fetch = min(k, total)
            if fetch <= 0:
                return none
            selector = (
                None if bits is None else faiss.IDSelectorBitmap(self._n, faiss.swig_ptr(bits))
            )
            selective = allowed is not None and self._selective(total)
            scores, labels = self._run(q, fetch, selector, exhaustive=selective)
            vids = np.where(labels >= 0, self._labels[np.maximum(labels, 0)], DEAD)
            live = vids >= 0
            return np.where(live, item_of(vids), -1), np.where(live, scores, -np.inf)

    def _search(
        self,
        q: np.ndarray,
        k: int,
        want: int,
        total: int,
        bits: np.ndarray | None,
        *,
        exhaustive: bool,
        wait: bool,
    ) -> list[IndexHit]:
        selector = None if bits is None else faiss.IDSelectorBitmap(self._n, faiss.swig_ptr(bits))
        fetch = min(k, total)
        while True:
            scores, labels = self._run(q, fetch, selector, exhaustive=exhaustive)
            found = labels[0] >= 0
            hits = self._hits(labels[0][found], scores[0][found])
            if len(hits) >= want:
                return hits[:k]
            if not wait and fetch < total:  # a wider pass than the caller sized for
                raise WouldBlock
            if int(found.sum()) < fetch and not exhaustive and self._approximate():
                exhaustive = True  # the graph or the probed lists ran dry: scan them all
                continue
            if fetch >= total:
                return hits
            fetch = min(total, fetch * 4)  # segments of one item crowd the top: widen

    def _approximate(self) -> bool:
        return self.spec.type == "hnsw" or self._lists > 0

    def _run(
        self, q: np.ndarray, fetch: int, selector: Any, *, exhaustive: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        index: Any = self._index
        params: Any
        if self._lists:
            params = faiss.SearchParametersIVF()
            params.nprobe = self._lists if exhaustive else min(self.spec.nprobe, self._lists)
        elif self.spec.type == "hnsw" and exhaustive:
            index = faiss.downcast_index(index.storage)  # the graph's vectors, scanned
            params = faiss.SearchParameters()
        elif self.spec.type == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.spec.ef_search, fetch)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        if self._half is not None and len(q) == 1 and self._max_norm < HALF_MAX_NORM:
            return self._scan_exact(q, fetch, params)
        if self._base is not None:
            return self._search_mapped(q, fetch, params)
        scores, labels = index.search(q, fetch, params=params)
        return scores, labels

    def _search_mapped(
        self, q: np.ndarray, fetch: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mapped lists' top ``fetch`` and the delta's, merged (same centroids, same
        probes: the lists of one IVF split in two)."""
        scores, labels = self._base.search(q, fetch, params=params)
        if not self._index.ntotal:
            return scores, labels
        more, extra = self._index.search(q, fetch, params=params)
        scores, labels = np.hstack([scores, more]), np.hstack([labels, extra])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)

    def _scan_exact(self, q: np.ndarray, fetch: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """One query's exact top ``fetch`` labels of a flat index, (1, fetch) like FAISS's:
        the float16 copy proposes candidates, the float32 vectors score them.

        Every vector left out scores at most the last candidate's float16 score plus the
        float16 error bound; once the ``fetch``-th rescored candidate reaches that, nothing
        left out can beat it. Otherwise more candidates are rescored."""
        n = self._n
        stored = _stored(self._index, n, self.dim)
        query = q[0]
        q_norm = float(np.linalg.norm(query.astype(np.float64)))
        bound = (HALF_ROUNDING + 2 * self.dim * SUM_ROUNDING) * self._max_norm * q_norm
        bound += 2 * self.dim * 2.0**-24 * float(np.abs(query).max())  # subnormal halves
        want = fetch + RESCORE_EXTRA
        while True:
            take = min(want, n)
            approx, found = self._half.search(q, take, params=params)
            labels = found[0][found[0] >= 0]
            exact = np.einsum("ij,j->i", stored[labels], query)  # a few rows: no BLAS threads
            order = np.lexsort((labels, -exact))[:fetch]
            complete = len(labels) < take or take >= n
            if complete or (
                len(order) == fetch and exact[order[-1]] >= approx[0][len(labels) - 1] + bound
            ):
                scores, top = exact[order], labels[order]
                if len(top) < fetch:  # fewer than asked: padded as FAISS pads
                    pad = fetch - len(top)
                    scores = np.concatenate([scores, np.full(pad, -np.inf, np.float32)])
                    top = np.concatenate([top, np.full(pad, -1, np.int64)])
                return scores[None].astype(np.float32), top[None]
            want *= 4

    def _hits(self, labels: np.ndarray, scores: np.ndarray) -> list[IndexHit]:
        vids = self._labels[labels]
        live = vids >= 0
        return _best_per_item(vids[live], scores[live])

    def _mask(self, rows: np.ndarray | None) -> tuple[int, int, np.ndarray] | None:
        """(vectors, items, bitmap over labels) a search may return, of the live ``rows``
        (labels) a filter allows; None: every label."""
        labels = self._labels[: self._n]
        if rows is None:
            if not self._dead:
                return None
            cached = self._live_bits
            if cached is None or cached[0] != self._writes:
                cached = (self._writes, np.packbits(labels >= 0, bitorder="little"))
                self._live_bits = cached  # readers may race to fill it: same value
            return self._live, self._items, cached[1]
        mask = np.zeros(self._n, dtype=bool)
        mask[rows] = True
        items = int(np.count_nonzero((labels[rows] & SEGMENT_MASK) == 0))
        return len(rows), items, np.packbits(mask, bitorder="little")

    def _rows_of(self, allowed: np.ndarray) -> np.ndarray:
        """The labels of the live vectors of items ``allowed``, ascending: two binary
        searches a key in the owner-sorted map, or one pass of numpy's ``isin`` over the
        labels when the keys are many (it is the cheaper of the two then)."""
        keys = np.asarray(allowed, dtype=np.int64).ravel()
        labels = self._labels[: self._n]
        if len(keys) * LOOKUP_SHARE > self._n:
            return np.flatnonzero(np.isin(labels >> SEGMENT_BITS, keys) & (labels >= 0))
        keys = np.sort(keys)  # ascending needles: each binary search starts where the last ended
        keys = keys[np.flatnonzero(np.diff(keys, prepend=keys[:1] - 1))]  # distinct
        lookup = self._owner_lookup()
        found = [_ranges(owners, rows, keys) for owners, rows in lookup.runs if len(owners)]
        rows = np.sort(np.concatenate(found or [np.empty(0, dtype=np.int64)]))
        return rows[labels[rows] >= 0]  # deleted since the lookup was built

    def _owner_lookup(self) -> _OwnerLookup:
        """The label map sorted by owner, for every label so far: built once per
        renumbering, then extended by a sorted tail of the labels added since."""
        cached = self._owners
        if cached is not None and cached.end == self._n:
            return cached
        labels = self._labels[: self._n]
        if cached is not None and self._n - cached.main_end <= max(
            OWNER_TAIL_MAX, cached.main_end // 8
        ):
            tail = _sorted_by_owner(labels, cached.main_end, self._n)
            fresh = _OwnerLookup(cached.main_end, self._n, (cached.runs[0], tail))
        else:
            whole = _sorted_by_owner(labels, 0, self._n)
            fresh = _OwnerLookup(self._n, self._n, (whole,))
        self._owners = fresh  # readers may race to fill it: same value
        return fresh

    def _score_rows(self, query: np.ndarray, k: int, rows: np.ndarray) -> list[IndexHit]:
        """The top-k items among the vectors at ``rows``, each scored exactly (against the
        vectors the index stores): every allowed item is a candidate, so min(k, items)
        come back without widening. Ties go to the lower label, as in a flat scan."""
        scores = np.einsum("ij,j->i", self._vectors_of(rows), query)  # as _scan_exact sums
        take = RESCORE_EXTRA + 4 * k  # ranked first; more when segments crowd them out
        while True:
            if take < len(rows):  # every vector scoring at least the take-th best, ties too
                cut = np.partition(scores, len(rows) - take)[len(rows) - take]
                near = np.flatnonzero(scores >= cut)
            else:
                near = np.arange(len(rows))
            order = near[np.lexsort((rows[near], -scores[near]))]
            vids = self._labels[rows[order]]
            _, first = np.unique(vids >> SEGMENT_BITS, return_index=True)  # best per item
            if len(first) >= k or take >= len(rows):
                break
            take *= 4
        best = np.sort(first)[:k]
        return [
            IndexHit(int(vid >> SEGMENT_BITS), float(score), int(vid & SEGMENT_MASK))
            for vid, score in zip(vids[best].tolist(), scores[order][best].tolist(), strict=True)
        ]

    def _vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors at labels ``rows``: float32 rows of a flat index or an HNSW
        graph's storage, a trained IVF's codes decoded through its direct map."""
        if self._lists:
            return np.asarray(self._index.reconstruct_batch(rows), dtype=np.float32)
        index: Any = self._index
        if self.spec.type == "hnsw":
            index = faiss.downcast_index(index.storage)
        return _stored(index, self._n, self.dim)[rows]

    # -- snapshots -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The index serialised: a header, FAISS' own format, the label map."""
        with self._lock.read():
            header = self._header(self._dead)
            index = faiss.serialize_index(self._index)
            labels = self._labels[: self._n]
            head = json.dumps(header).encode() + b"\n"
            return b"".join(
                [FORMAT, head, struct.pack("<Q", len(index)), index.data, labels.tobytes()]
            )

    def _header(self, dead: int) -> dict[str, Any]:
        """A snapshot's header line: what :meth:`from_bytes` checks and restores."""
        return {
            "dim": self.dim,
            "spec": {"type": self.spec.type, **self.spec.params()},
            "n": self._n,
            "live": self._live,
            "items": self._items,
            "dead": dead,
            "lists": self._lists,
        }

    def write_chunks(self) -> Iterator[bytes | memoryview]:
        """What :meth:`to_bytes` returns, in pieces of at most one list each; for a trained
        on_disk IVF its lists and delta merged, the dead left out: the next load maps it.

        The index must not change while the pieces are taken (the caller holds its writes
        back: a snapshot runs under the collection's writer lock)."""
        if not self.streams:
            yield self.to_bytes()
            return
        with self._lock.write():  # the lists are swapped out for a moment: no search then
            shell = self._shell if self._shell is not None else _shell_of(self._index)
        with self._lock.read():
            yield from self._merged_chunks(shell)

    def _merged_chunks(self, shell: bytes) -> Iterator[bytes | memoryview]:
        parts = [p for p in (self._base, self._index) if p is not None]
        lists: list[Any] = [faiss.extract_index_ivf(p).invlists for p in parts]
        code_size = int(lists[0].code_size)
        labels = self._labels[: self._n]

        def rows(i: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for inv in lists:
                size = int(inv.list_size(i))
                if size:
                    ids = faiss.rev_swig_ptr(inv.get_ids(i), size)
                    codes = faiss.rev_swig_ptr(inv.get_codes(i), size * code_size)
                    keep = labels[ids] >= 0
                    yield codes.reshape(size, code_size)[keep], ids[keep]

        def kept_in(i: int) -> int:  # the ids alone: the codes are read once, when written
            return sum(
                int(np.count_nonzero(labels[faiss.rev_swig_ptr(inv.get_ids(i), size)] >= 0))
                for inv in lists
                if (size := int(inv.list_size(i)))
            )

        sizes = np.array([kept_in(i) for i in range(self._lists)], dtype=np.uint64)
        total = int(sizes.sum())
        prefix = _prefix(shell, total)
        lists_part = _lists_header(self._lists, code_size, sizes)
        length = len(prefix) + len(lists_part) + total * (code_size + 8)
        kept = np.where(labels >= 0, labels, GONE)
        header = {**self._header(0), "lists_at": len(prefix)}
        yield FORMAT + json.dumps(header).encode() + b"\n" + struct.pack("<Q", length)
        yield prefix
        yield lists_part
        for i in np.flatnonzero(sizes).tolist():
            pieces = list(rows(i))
            yield b"".join(codes.tobytes() for codes, _ in pieces)
            yield b"".join(ids.tobytes() for _, ids in pieces)
        yield kept.tobytes()

    def adopt(self, payload: bytes | memoryview) -> None:
        """Take the state of the snapshot just written from this index (:meth:`write_chunks`)
        and map its lists: the delta and the dead labels go. ValueError when the payload is
        not this index's."""
        fresh = VectorIndex.from_bytes(self.dim, payload, self.spec)
        with self._lock.write():
            if (fresh._n, fresh._live, fresh._items) != (self._n, self._live, self._items):
                raise ValueError("the snapshot does not hold this index's vectors: not adopted")
            self._index, self._base, self._mapped = fresh._index, fresh._base, fresh._mapped
            self._shell = fresh._shell
            self._labels, self._dead, self._lists = fresh._labels, fresh._dead, fresh._lists
            self._writes += 1

    @classmethod
    def from_bytes(
        cls, dim: int, data: bytes | memoryview, spec: IndexSpec | None = None
    ) -> VectorIndex:
        """The inverse of to_bytes; ValueError when the bytes are not an index of this dim
        (and of ``spec``, when given). ``data`` may be a view (of a mapped file): it is read
        in place, never copied whole."""
        view = memoryview(data)
        head = bytes(view[: len(FORMAT) + HEADER_SCAN])
        if not head.startswith(FORMAT):
            raise ValueError("not a vector index snapshot")
        end = head.find(b"\n", len(FORMAT))
        if end < 0:
            raise ValueError("unreadable vector index snapshot: no header line")
        try:
            header = json.loads(bytes(view[len(FORMAT) : end]))
            at = end + 1 + 8
            (length,) = struct.unpack("<Q", view[at - 8 : at])
            raw = np.frombuffer(view[at : at + length], np.uint8)
            base: Any = None
            if "lists_at" in header:  # an on_disk IVF: its lists are read in place
                reader = faiss.ZeroCopyIOReader(faiss.swig_ptr(raw), len(raw))  # type: ignore[attr-defined]
                base = faiss.read_index(reader)
                shell = _shell_at(raw, int(header["lists_at"]), base)
                index = faiss.deserialize_index(np.frombuffer(shell, np.uint8))
                index.ntotal = 0  # the delta: empty lists of the same centroids
            else:
                index = faiss.deserialize_index(raw)
            labels = np.frombuffer(view[at + length :], dtype=np.int64).copy()
            params = dict(header["spec"])
            saved = IndexSpec.of(params.pop("type"), params)
        except (ValueError, KeyError, TypeError, RuntimeError, struct.error) as exc:
            raise ValueError(f"unreadable vector index snapshot: {exc}") from exc
        if header["dim"] != dim or index.d != dim:
            raise ValueError(f"snapshot has dimension {index.d}, expected {dim}")
        if spec is not None and saved != spec:
            raise ValueError(f"snapshot is a {saved} index, the collection wants {spec}")
        if len(labels) != header["n"]:
            raise ValueError("snapshot's label map is truncated")
        out = cls(dim, saved)
        out._index = index
        if base is not None and saved.on_disk:
            out._base, out._mapped, out._shell = base, raw, shell
        elif base is not None:  # written on disk, read by a spec that is not: lists copied
            index = out._index = faiss.deserialize_index(raw)
        out._labels, out._n = labels, len(labels)
        if out._half is not None and out._n:  # derived: the float16 copy and the norm bound
            stored = _stored(index, out._n, dim)
            for start in range(0, out._n, 65536):
                chunk = stored[start : start + 65536]
                out._half.add(chunk)
                norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64))
                out._max_norm = max(out._max_norm, float(norms.max()))
        out._live, out._items = int(header["live"]), int(header["items"])
        out._dead, out._lists = int(header["dead"]), int(header["lists"])
        if out._lists and not saved.on_disk:  # snapshots from before selective filters
            faiss.extract_index_ivf(index).set_direct_map_type(_HASHTABLE)
        return out


def _dead_selector(index: Any, dead: np.ndarray) -> Any:
    """What an IVF removes its dead labels by: an IDSelectorArray where it keeps a direct
    map (the only selector the map removes by: one lookup a label), else an IDSelectorBatch
    (a hash set: one probe a stored code; an array would be scanned for each of them, the
    stored codes times the dead ones: an on_disk IVF keeps no map)."""
    ivf = faiss.extract_index_ivf(index)
    if ivf.direct_map.type == _HASHTABLE:
        return faiss.IDSelectorArray(len(dead), faiss.swig_ptr(dead))
    return faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))


class _OwnerLookup(NamedTuple):
    """Labels sorted by owner: a main run over labels [0, main_end), a tail run after it."""

    main_end: int
    end: int
    runs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (owners ascending, their labels)


def _sorted_by_owner(labels: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    owners = labels[start:end] >> SEGMENT_BITS  # dead labels' owners are negative
    order = np.argsort(owners, kind="stable")
    return owners[order], order.astype(np.int64) + start


def _ranges(owners: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The labels whose owner is one of ``keys`` (ascending, distinct), from a run sorted by
    owner: one binary search a key, a second only for items of several vectors."""
    lo = np.searchsorted(owners, keys, side="left")
    at = np.minimum(lo, len(owners) - 1)
    hit = owners[at] == keys
    lo, keys = lo[hit], keys[hit]
    nxt = np.minimum(lo + 1, len(owners) - 1)
    more = (lo + 1 < len(owners)) & (owners[nxt] == keys)
    if not more.any():  # one vector an item: nothing to expand
        return labels[lo]
    counts = np.ones(len(lo), dtype=np.int64)
    counts[more] = np.searchsorted(owners, keys[more], side="right") - lo[more]
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return labels[starts + np.arange(int(counts.sum()))]


_EMPTY_LISTS = 32  # "ilar", nlist, code_size, "sprs", an empty vector: FAISS' empty lists


def _lists_header(nlist: int, code_size: int, sizes: np.ndarray) -> bytes:
    """The head of FAISS' ArrayInvertedLists serialisation (index_write.cpp): sizes of every
    list ("full") when most are used, else (list, size) pairs of the used ones ("sprs");
    the codes then ids of each used list follow it."""
    head = LISTS_TAG + struct.pack("<QQ", nlist, code_size)
    used = np.flatnonzero(sizes)
    if len(used) > nlist // 2:
        table = sizes.astype("<u8")
        tag = b"full"
    else:
        table = np.column_stack([used, sizes[used]]).astype("<u8").ravel()
        tag = b"sprs"
    return head + tag + struct.pack("<Q", len(table)) + table.tobytes()


def _shell_of(index: Any) -> bytes:
    """An IVF serialised without its lists (centroids and quantiser): its lists are swapped
    for empty ones while FAISS writes it (a copy would double it in memory)."""
    inner = faiss.extract_index_ivf(index)
    lists: Any = inner.invlists
    owned, total = inner.own_invlists, inner.ntotal
    empty = faiss.ArrayInvertedLists(inner.nlist, inner.code_size)
    inner.own_invlists = False  # replace_invlists would free the real ones otherwise
    inner.replace_invlists(empty, False)
    try:
        inner.ntotal = 0
        raw: bytes = faiss.serialize_index(index).tobytes()
    finally:
        inner.replace_invlists(lists, False)
        inner.own_invlists, inner.ntotal = owned, total
    if raw[len(raw) - _EMPTY_LISTS :][:4] != LISTS_TAG:
        raise RuntimeError("FAISS wrote an IVF in a layout this version cannot stream")
    return raw


def _prefix(shell: bytes, total: int) -> bytes:
    """The serialised IVF ``shell`` up to its lists, as it reads holding ``total`` vectors."""
    index = faiss.deserialize_index(np.frombuffer(shell, np.uint8))
    index.ntotal = total
    raw: bytes = faiss.serialize_index(index).tobytes()
    return raw[: len(raw) - _EMPTY_LISTS]


def _shell_at(raw: np.ndarray, lists_at: int, base: Any) -> bytes:
    """The shell (:func:`_shell_of`) of an IVF serialised in ``raw`` with its lists at
    ``lists_at``."""
    inner = faiss.extract_index_ivf(base)
    empty = _lists_header(inner.nlist, inner.code_size, np.zeros(inner.nlist, np.uint64))
    return bytes(raw[:lists_at]) + empty


def _stored(index: Any, n: int, dim: int) -> np.ndarray:
    """The float32 vectors of a flat FAISS index, (n, dim), viewed in place (no copy)."""
    view: np.ndarray = faiss.rev_swig_ptr(index.get_xb(), n * dim)
    return view.reshape(n, dim)


def _best_per_item(ids: np.ndarray, scores: np.ndarray) -> list[IndexHit]:
    """Hits in rank order, each item once (its best segment)."""
    seen: set[int] = set()
    hits = []
    for vid, score in zip(ids.tolist(), scores.tolist(), strict=True):
        pk, segment = vid >> SEGMENT_BITS, vid & SEGMENT_MASK
        if pk not in seen:
            seen.add(pk)
            hits.append(IndexHit(pk, float(score), segment))
    return hits
