"""index/pairs.py and VectorIndex.search_many: all-pairs in blocks against numpy's full
matrix, k-NN candidates folded into pairs, the order and the keyset position."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.pairs import Pairs, all_pairs, candidate_pairs, range_pairs
from index.vector_index import VectorIndex


def unit_rows(seed: int, n: int, dim: int, copies: int = 0) -> np.ndarray:
    """Random unit rows, the last ``copies`` of them near-copies of the first ones."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    for c in range(min(copies, n // 2)):
        rows[n - 1 - c] = rows[c] + 0.05 * rng.normal(size=dim).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def brute(rows: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """Every pair i < j at least ``threshold`` alike, from the whole n x n matrix."""
    full = rows @ rows.T
    i, j = np.nonzero(np.triu(full >= threshold, k=1))
    return {(int(a), int(b)): float(full[a, b]) for a, b in zip(i, j, strict=True)}


def as_dict(pairs: Pairs) -> dict[tuple[int, int], float]:
    return {
        (int(a), int(b)): float(s)
        for a, b, s in zip(pairs.left, pairs.right, pairs.scores, strict=True)
    }


def assert_ordered(pairs: Pairs) -> None:
    keys = list(
        zip((-pairs.scores).tolist(), pairs.left.tolist(), pairs.right.tolist(), strict=True)
    )
    assert keys == sorted(keys)
    assert np.all(pairs.left < pairs.right)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(0, 40),
    dim=st.integers(2, 8),
    block=st.integers(1, 9),
    threshold=st.floats(-1.0, 1.0, allow_subnormal=False),
    copies=st.integers(0, 5),
)
def test_all_pairs_in_blocks_is_numpys_full_matrix(
    seed: int, n: int, dim: int, block: int, threshold: float, copies: int
) -> None:
    rows = unit_rows(seed, n, dim, copies)
    found = all_pairs(rows, threshold, cap=10_000, block=block)
    want = brute(rows, threshold)
    got = as_dict(found)
    # Blocks and the full matrix may round a product differently: only pairs on the
    # threshold's edge may differ.
    edge = 1e-5
    assert {p for p, s in want.items() if s >= threshold + edge} <= set(got)
    assert all(s >= threshold - edge for s in got.values())
    full = rows @ rows.T
    for (a, b), s in got.items():
        assert abs(s - min(float(full[a, b]), 1.0)) <= edge
    assert_ordered(found)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), cap=st.integers(1, 30), block=st.integers(1, 8))
def test_a_cap_keeps_the_best_pairs(seed: int, cap: int, block: int) -> None:
    rows = unit_rows(seed, 30, 3)
    found = all_pairs(rows, -1.0, cap=cap, block=block)
    assert len(found) == cap
    scores = np.sort(np.array(list(brute(rows, -1.0).values()), dtype=np.float32))[::-1]
    np.testing.assert_allclose(found.scores, np.minimum(scores[:cap], 1.0), atol=1e-5)
    assert found.truncated == (cap < len(scores)), "a cut list says so"
    assert not all_pairs(rows, -1.0, cap=len(scores), block=block).truncated


def test_all_pairs_calls_between_after_each_block_and_stops_when_it_raises() -> None:
    rows = unit_rows(7, 10, 3)
    calls: list[int] = []
    all_pairs(rows, 0.5, cap=100, block=4, between=lambda: calls.append(1))
    assert len(calls) == 3 + 2 + 1  # blocks of rows x blocks of columns from the diagonal

    def stop() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise TimeoutError

    calls.clear()
    with pytest.raises(TimeoutError):
        all_pairs(rows, 0.5, cap=100, block=4, between=stop)
    assert len(calls) == 2


def test_candidates_say_when_the_cap_cut_them() -> None:
    left, right = np.array([0, 0, 1, 1]), np.array([1, 2, 2, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.9], dtype=np.float32)
    assert not candidate_pairs(left, right, scores, 0.5, cap=3).truncated
    assert candidate_pairs(left, right, scores, 0.5, cap=2).truncated
    assert candidate_pairs(left, right, scores, 0.95, cap=3, truncated=True).truncated


def test_an_item_never_pairs_with_itself_and_scores_stop_at_one() -> None:
    rows = unit_rows(1, 3, 4)
    rows[2] = rows[0]
    found = all_pairs(rows, 0.99, cap=10, block=2)
    assert as_dict(found).keys() == {(0, 2)}
    assert found.scores[0] <= 1.0


def test_after_is_strictly_past_a_pair_in_the_order() -> None:
    scores = np.array([0.9, 0.9, 0.9, 0.5], dtype=np.float32)
    pairs = Pairs(np.array([1, 1, 2, 0]), np.array([2, 5, 3, 1]), scores)
    assert pairs.after(0.9, 1, 2) == 1
    assert pairs.after(0.9, 1, 5) == 2
    assert pairs.after(0.9, 2, 3) == 3
    assert pairs.after(0.95, 9, 9) == 0  # a pair since gone: the next one after its place
    assert pairs.after(0.7, 0, 0) == 3
    assert pairs.after(0.1, 0, 0) == 4


def test_candidates_are_each_pair_once_with_its_best_score() -> None:
    queries = np.array([1, 1, 2, 2, 3, 3])
    hits = np.array([1, 2, 1, 2, 1, 7])
    scores = np.array([1.0, 0.8, 0.81, 1.0, 0.5, 0.9], dtype=np.float32)
    found = candidate_pairs(queries, hits, scores, 0.6, cap=10)
    assert as_dict(found) == {(3, 7): np.float32(0.9), (1, 2): np.float32(0.81)}
    assert list(found.left) == [3, 1]


def test_search_many_gives_each_querys_nearest_items() -> None:
    rows = unit_rows(4, 20, 8, copies=3)
    index = VectorIndex(8)
    index.upsert(np.arange(100, 120), rows)
    keys, scores = index.search_many(rows[:5], 3)
    full = rows[:5] @ rows.T
    want = np.argsort(-full, axis=1)[:, :3] + 100
    assert keys.tolist() == want.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(full, want - 100, axis=1), atol=1e-5)
    # Restricted to some items, and deleted ones gone.
    index.remove(np.array([101]))
    keys, _ = index.search_many(rows[:2], 5, allowed=np.array([100, 101, 102]))
    assert [sorted(k[k >= 0].tolist()) for k in keys] == [[100, 102], [100, 102]]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 70),
    block=st.integers(1, 16),
    columns=st.integers(1, 40),
    threshold=st.floats(0.0, 0.99, allow_subnormal=False),
)
def test_range_pairs_are_all_pairs(
    seed: int, n: int, block: int, columns: int, threshold: float
) -> None:
    """FAISS's range search, a block of rows against the rows from its own on, a tile of
    columns at a time: the pairs (and their order) all_pairs finds, each once, never an
    item with itself."""
    rows = unit_rows(seed, n, 8, copies=n // 4)
    got = range_pairs(rows, threshold, cap=10_000, block=block, columns=columns)
    want = all_pairs(rows, threshold, cap=10_000)
    assert_ordered(got)
    # FAISS and numpy may round a product differently: only pairs on the edge may differ.
    edge = 1e-5
    mine, theirs = as_dict(got), as_dict(want)
    assert {p for p, s in theirs.items() if s >= threshold + edge} <= set(mine)
    assert {p for p, s in mine.items() if s >= threshold + edge} <= set(theirs)
    assert all(abs(s - theirs[p]) <= edge for p, s in mine.items() if p in theirs)
    assert not got.truncated


def test_range_pairs_keep_the_best_cap_and_count_the_work() -> None:
    rows = unit_rows(3, 300, 16, copies=60)
    calls: list[tuple[int, int]] = []
    got = range_pairs(
        rows, 0.0, cap=50, block=64, between=lambda done, total: calls.append((done, total))
    )
    want = all_pairs(rows, 0.0, cap=50)
    assert got.truncated and len(got) == 50
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert [t for _, t in calls] == [300 * 299 // 2] * 5
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1][0] == 300 * 299 // 2


def test_range_pairs_hold_a_tile_of_hits_at_a_time() -> None:
    """Every pair alike (threshold 0 on copies of one vector): each search returns at most
    a block of rows x a tile of columns, however many pairs there are."""
    rows = np.tile(np.eye(1, 8, dtype=np.float32), (100, 1))
    calls: list[tuple[int, int]] = []
    got = range_pairs(
        rows, 0.0, cap=10_000, block=10, columns=25, between=lambda d, t: calls.append((d, t))
    )
    assert len(got) == 100 * 99 // 2
    assert len(calls) == sum(len(range(top, 100, 25)) for top in range(0, 100, 10))
    assert calls[-1] == (100 * 99 // 2, 100 * 99 // 2)


def test_a_pair_exactly_at_the_threshold_is_listed_by_both_paths() -> None:
    """FAISS's range search keeps scores above its radius; a listing keeps those at or above
    its threshold: two copies of one vector (a product of exactly 1.0) at threshold 1."""
    rows = np.vstack([np.eye(1, 8, dtype=np.float32)] * 2 + [np.eye(1, 8, 1, dtype=np.float32)])
    assert as_dict(all_pairs(rows, 1.0, cap=10)) == {(0, 1): 1.0}
    assert as_dict(range_pairs(rows, 1.0, cap=10)) == {(0, 1): 1.0}


def test_pairs_round_trip_through_bytes() -> None:
    rows = unit_rows(5, 40, 8, copies=10)
    pairs = all_pairs(rows, 0.3, cap=1000).keyed(np.arange(40, dtype=np.int64) * 2**40)
    back = Pairs.from_bytes(pairs.to_bytes())
    assert len(pairs.to_bytes()) == 20 * len(pairs)
    assert back.left.tolist() == pairs.left.tolist()
    assert back.right.tolist() == pairs.right.tolist()
    assert back.scores.tolist() == pairs.scores.tolist()
    assert len(Pairs.from_bytes(Pairs.empty().to_bytes())) == 0
