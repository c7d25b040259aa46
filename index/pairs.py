"""Pairs of alike vectors in one set: exact all-pairs in blocks, or candidates a k-NN search
proposed, both kept to the best ``cap`` pairs and ordered one way.

Rows stand for items in ascending key order, so a pair ``(i, j)`` with ``i < j`` names the
item stored first as ``i``. The order is score descending, then ``i``, then ``j``: a total
order, so a page can start strictly after any pair (a keyset cursor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from index.vector_index import omp_threads

BLOCK = 1024  # rows x columns of one block of scores: 4 MiB of float32, whatever n is
# Rows one range search asks, and the columns it searches (FAISS tiles the products): the
# hits it returns at once are at most 4096 x 4096 (16M, 200 MB), whatever the threshold.
RANGE_BLOCK = 4096
RANGE_COLUMNS = 4096


@dataclass(frozen=True)
class Pairs:
    """Pairs of rows (``left < right``) with their scores, best first; ``truncated`` when
    more pairs met the threshold than the cap kept."""

    left: np.ndarray  # int64
    right: np.ndarray  # int64
    scores: np.ndarray  # float32
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Pairs:
        """No pairs."""
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none.copy(), np.zeros(0, dtype=np.float32))

    def keyed(self, keys: np.ndarray) -> Pairs:
        """The same pairs with each row replaced by ``keys[row]`` (ascending keys keep the
        order)."""
        return Pairs(keys[self.left], keys[self.right], self.scores, self.truncated)

    def where(self, keep: np.ndarray) -> Pairs:
        """The pairs where ``keep`` is true (still truncated if these were)."""
        return Pairs(self.left[keep], self.right[keep], self.scores[keep], self.truncated)

    def to_bytes(self) -> bytes:
        """The pairs as little-endian arrays back to back (20 bytes a pair), for SQL."""
        parts = (self.left.astype("<i8"), self.right.astype("<i8"), self.scores.astype("<f4"))
        return b"".join(p.tobytes() for p in parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Pairs:
        """The inverse of to_bytes (never truncated: a truncated listing is not stored)."""
        n = len(raw) // 20
        left = np.frombuffer(raw, dtype="<i8", count=n).astype(np.int64)
        right = np.frombuffer(raw, dtype="<i8", count=n, offset=8 * n).astype(np.int64)
        scores = np.frombuffer(raw, dtype="<f4", count=n, offset=16 * n).astype(np.float32)
        return cls(left, right, scores)

    def after(self, score: float, left: int, right: int) -> int:
        """Where the pairs strictly after ``(score, left, right)`` in the order begin."""
        s = np.float32(score)
        later = (self.scores < s) | (
            (self.scores == s) & ((self.left > left) | ((self.left == left) & (self.right > right)))
        )
        found = np.flatnonzero(later)
        return int(found[0]) if len(found) else len(self)


def ordered(
    left: np.ndarray, right: np.ndarray, scores: np.ndarray, cap: int, *, truncated: bool = False
) -> Pairs:
    """The best ``cap`` pairs, best first, ties by left then right row; scores at most 1
    (float32 rounding puts a vector's product with itself a little above). Truncated if
    more than ``cap`` were given, or ``truncated`` says some were dropped before."""
    scores = np.minimum(scores, np.float32(1.0))
    order = np.lexsort((right, left, -scores.astype(np.float64)))[:cap]
    return Pairs(
        left[order].astype(np.int64),
        right[order].astype(np.int64),
        scores[order].astype(np.float32),
        truncated or len(scores) > cap,
    )


class _Keeper:
    """Collects pairs at or above a floor; past twice ``cap`` it keeps the best ``cap`` and
    raises the floor to the worst of them, so memory stays O(cap + one block)."""

    def __init__(self, threshold: float, cap: int) -> None:
        self.floor = np.float32(threshold)
        self.cap = cap
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.held = 0
        self.dropped = False

    def add(self, left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> None:
        if not len(scores):
            return
        self.parts.append((left, right, scores))
        self.held += len(scores)
        if self.held > 2 * self.cap:
            best = self.result()
            self.dropped = self.dropped or best.truncated
            self.parts = [(best.left, best.right, best.scores)]
            self.held = len(best)
            if len(best) >= self.cap:
                self.floor = max(self.floor, best.scores[-1])

    def result(self) -> Pairs:
        if not self.parts:
            return Pairs.empty()
        left, right, scores = (np.concatenate(p) for p in zip(*self.parts, strict=True))
        return ordered(left, right, scores, self.cap, truncated=self.dropped)


def all_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    cap: int,
    block: int = BLOCK,
    between: Callable[[], None] | None = None,
) -> Pairs:
    """Every pair of rows whose inner product is at least ``threshold`` (the best ``cap``),
    computed a block of rows against a block of columns at a time: never an n x n matrix.
    ``between`` is called after each block (a deadline raises there to stop the work)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(matrix)
    keep = _Keeper(threshold, cap)
    for top in range(0, n, block):
        rows = matrix[top : top + block]
        for first in range(top, n, block):
            scores = rows @ matrix[first : first + block].T
            if first == top:  # the diagonal block: each pair once, never an item with itself
                scores[np.tril_indices(len(rows), m=scores.shape[1])] = -np.inf
            i, j = np.nonzero(scores >= keep.floor)
            keep.add(i + top, j + first, scores[i, j])
            if between is not None:
                between()
    return keep.result()


def range_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    cap: int,
    block: int = RANGE_BLOCK,
    columns: int = RANGE_COLUMNS,
    between: Callable[[int, int], None] | None = None,
) -> Pairs:
    """The pairs ``all_pairs`` finds, through FAISS's range search over a flat index: each
    block of rows searched against the rows from its own on, a tile of columns at a time
    (never a pair twice, never an n x n matrix, never more hits held than a tile holds), on
    one OpenMP thread per core, as an index build. ``between(done, total)`` is called
    after each tile with the comparisons made so far and in all."""
    with omp_threads(0):
        return _range_pairs(vectors, threshold, cap, block, columns, between)


def _range_pairs(
    vectors: np.ndarray,
    threshold: float,
    cap: int,
    block: int,
    columns: int,
    between: Callable[[int, int], None] | None,
) -> Pairs:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = matrix.shape
    keep = _Keeper(threshold, cap)
    columns = max(block, columns)  # the diagonal tile holds the whole row block
    total = n * (n - 1) // 2
    done = 0
    for top in range(0, n, block):
        rows = matrix[top : top + block]
        own = np.arange(len(rows), dtype=np.int64) + top
        for first in range(top, n, columns):
            # A tile of columns at a time: FAISS returns every hit of a search at once, so
            # the hits held are at most rows x columns whatever the threshold (a low one
            # on a large collection would otherwise hold billions).
            tile = faiss.IndexFlatIP(dim)
            tile.add(matrix[first : first + columns])
            # FAISS keeps scores above the radius, the listing those at or above the floor.
            radius = float(np.nextafter(np.float32(keep.floor), np.float32(-np.inf)))
            lims, scores, labels = tile.range_search(rows, radius)
            left = np.repeat(own, np.diff(lims).astype(np.int64))
            right = labels.astype(np.int64) + first
            taken = (right > left) & (scores >= keep.floor)  # each pair once, never itself
            keep.add(left[taken], right[taken], scores[taken])
            done += len(rows) * tile.ntotal
            if first == top:  # the diagonal tile: a row's own and earlier columns
                done -= len(rows) * (len(rows) + 1) // 2
            if between is not None:
                between(done, total)
    return keep.result()


def candidate_pairs(
    left: np.ndarray,
    right: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    cap: int,
    truncated: bool = False,
) -> Pairs:
    """Pairs from k-NN hits (query row, hit row, score): self hits dropped, each pair once
    (rows swapped so that left < right) with its best score, at least ``threshold``."""
    a = np.asarray(left, dtype=np.int64)
    b = np.asarray(right, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float32)
    keep = (a != b) & (s >= np.float32(threshold))
    a, b, s = a[keep], b[keep], s[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if not len(s):
        return Pairs.empty() if not truncated else ordered(a, b, s, cap, truncated=True)
    # Group equal pairs, best score first in each group, then take each group's first.
    order = np.lexsort((-s.astype(np.float64), hi, lo))
    lo, hi, s = lo[order], hi[order], s[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return ordered(lo[first], hi[first], s[first], cap, truncated=truncated)
