"""A flat index answers exactly what numpy's brute force answers: the same ids in the same
order and the same scores, whatever its scan does to be fast (filters, deletions, k past the
size, near-ties below float16's resolution, snapshots)."""

from __future__ import annotations

import numpy as np
import pytest

from index.vector_index import COMPACT_MIN, VectorIndex
from models.encoders.aligner import l2_normalize

DIM = 64


def unit(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(rows, dim))).astype(np.float32)


def brute(
    pks: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int
) -> tuple[list[int], np.ndarray]:
    """numpy's exact top k: ids by descending score (ties by id), and their scores."""
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((pks, -scores))[:k]
    return pks[order].tolist(), scores[order]


def check(
    index: VectorIndex,
    pks: np.ndarray,
    vectors: np.ndarray,
    query: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
) -> None:
    keep = np.ones(len(pks), bool) if allowed is None else np.isin(pks, allowed)
    want_ids, want_scores = brute(pks[keep], vectors[keep], query, k)
    hits = index.search(query, k, allowed)
    assert [h.pk for h in hits] == want_ids
    np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_random_queries_match_brute_force(k: int) -> None:
    vectors = unit(3000, seed=1)
    pks = np.arange(3000, dtype=np.int64) * 7 + 3
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    for query in unit(20, seed=2):
        check(index, pks, vectors, query, k)


def test_filters_match_brute_force_over_the_allowed_items() -> None:
    vectors = unit(2000, seed=3)
    pks = np.arange(2000, dtype=np.int64)
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    rng = np.random.default_rng(4)
    for share in (0.001, 0.05, 0.5):
        allowed = rng.choice(pks, max(1, int(share * len(pks))), replace=False)
        for query in unit(5, seed=5):
            check(index, pks, vectors, query, 10, allowed)


def test_deletions_below_and_past_compaction_match_brute_force() -> None:
    vectors = unit(4 * COMPACT_MIN, seed=6)
    pks = np.arange(len(vectors), dtype=np.int64)
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    alive = np.ones(len(pks), bool)
    for doomed in (np.arange(0, 100), np.arange(100, 100 + COMPACT_MIN)):
        index.remove(doomed)
        alive[doomed] = False
        assert index.deleted in (0, int((~alive).sum()))
        for query in unit(5, seed=7):
            check(index, pks[alive], vectors[alive], query, 10)
    assert index.deleted == 0  # the second removal compacted the index


def test_k_past_the_size_and_an_empty_index() -> None:
    vectors = unit(7, seed=8)
    pks = np.arange(7, dtype=np.int64)
    assert VectorIndex(DIM).search(vectors[0], 5) == []
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    check(index, pks, vectors, vectors[3], 50)
    index.remove(pks)
    assert index.search(vectors[0], 5) == []


def test_near_ties_finer_than_float16_keep_their_exact_order() -> None:
    # 400 vectors whose scores with the query lie 1e-6 apart, within float16's error
    # (~1e-4 here, different for each vector): a float16 scan alone, or one rescoring
    # only its own top k, ranks them otherwise.
    query = unit(1, seed=9)[0]
    rng = np.random.default_rng(10)
    cosines = 0.9 + 1e-6 * rng.permutation(400)
    others = unit(400, seed=11)
    others = l2_normalize(others - np.outer(others @ query, query))
    vectors = (np.outer(cosines, query) + np.sqrt(1 - cosines**2)[:, None] * others).astype(
        np.float32
    )
    all_vectors = np.concatenate([vectors, unit(5000, seed=12)])
    pks = np.arange(len(all_vectors), dtype=np.int64)
    index = VectorIndex(DIM)
    index.upsert(pks, all_vectors)
    gaps = np.diff(np.sort(vectors.astype(np.float64) @ query))
    assert gaps.min() > 5e-7 and gaps.max() < 2e-6  # float32 tells them apart, float16 not
    for k in (1, 10, 64):
        check(index, pks, all_vectors, query, k)


def test_a_snapshot_answers_exactly_too() -> None:
    vectors = unit(1500, seed=13)
    pks = np.arange(1500, dtype=np.int64)
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    index.remove(pks[:10])
    loaded = VectorIndex.from_bytes(DIM, index.to_bytes())
    for query in unit(5, seed=14):
        check(loaded, pks[10:], vectors[10:], query, 10)
    loaded.upsert(np.array([5000]), vectors[0])
    check(
        loaded,
        np.concatenate([pks[10:], [5000]]),
        np.concatenate([vectors[10:], vectors[:1]]),
        vectors[0],
        3,
    )


def test_many_queries_at_once_match_brute_force() -> None:
    vectors = unit(1000, seed=15)
    pks = np.arange(1000, dtype=np.int64)
    index = VectorIndex(DIM)
    index.upsert(pks, vectors)
    queries = unit(30, seed=16)
    keys, scores = index.search_many(queries, 5)
    for query, got, got_scores in zip(queries, keys, scores, strict=True):
        want_ids, want_scores = brute(pks, vectors, query, 5)
        assert got.tolist() == want_ids
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-5)
