"""Selective filters: every index type finds the allowed items' vectors by key and scores
only those, exactly (numpy over the same stored vectors gives the same ids, segments and
scores), with k results whenever k items match, and without a pass over the whole index."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index import vector_index
from index.spec import IndexSpec
from index.vector_index import VectorIndex
from models.encoders.aligner import l2_normalize

DIM = 16
SPECS = {
    "flat": IndexSpec(),
    "hnsw": IndexSpec(type="hnsw", m=8, ef_construction=20, ef_search=16),
    "ivf": IndexSpec(type="ivf", nlist=16, nprobe=2),
    "ivf-sq8": IndexSpec(type="ivf", nlist=16, nprobe=2, quantizer="sq8"),
    "ivf-pq": IndexSpec(type="ivf", nlist=16, nprobe=2, quantizer="pq", pq_m=8),
}


def unit(rows: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).normal(size=(rows, DIM))).astype(np.float32)


class Model:
    """What the index should hold: each live item's vectors, in insertion order."""

    def __init__(self) -> None:
        self.items: dict[int, np.ndarray] = {}

    def upsert(self, index: VectorIndex, pks: list[int], counts: list[int], seed: int) -> None:
        vectors = unit(sum(counts), seed)
        index.upsert(np.array(pks), vectors, np.array(counts))
        at = 0
        for pk, count in zip(pks, counts, strict=True):
            self.items.pop(pk, None)  # replaced: re-added after every other item
            self.items[pk] = vectors[at : at + count]
            at += count

    def remove(self, index: VectorIndex, pks: list[int]) -> None:
        index.remove(np.array(pks))
        for pk in pks:
            self.items.pop(pk, None)

    def top(
        self, index: VectorIndex, q: np.ndarray, k: int, allowed: list[int]
    ) -> list[tuple[int, int]]:
        """numpy's top k (item, segment) over the vectors the index stores (an IVF's codes
        decoded), best segment per item, ties by insertion order."""
        rows, owners, segments = [], [], []
        for pk in dict.fromkeys(allowed):
            if pk in self.items:
                rows.append(self.items[pk])
                owners += [pk] * len(self.items[pk])
                segments += list(range(len(self.items[pk])))
        if not rows:
            return []
        stored = decoded(index, np.concatenate(rows))
        scores = stored.astype(np.float64) @ q.astype(np.float64)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], insertion(self, owners[i])))
        best: dict[int, int] = {}
        for i in order:
            best.setdefault(owners[i], segments[i])
        return list(best.items())[:k]


def insertion(model: Model, pk: int) -> int:
    return list(model.items).index(pk)


def decoded(index: VectorIndex, vectors: np.ndarray) -> np.ndarray:
    """The vectors as the index stores them: an IVF's quantised codes, decoded."""
    ivf = index._index
    if not index.lists or isinstance(ivf, faiss.IndexIVFFlat):
        return vectors
    codes = ivf.quantizer.assign(vectors, 1)[:, 0]
    out = np.empty_like(vectors)
    for list_no in np.unique(codes):
        rows = codes == list_no
        centroid = ivf.quantizer.reconstruct(int(list_no))
        residual = vectors[rows] - centroid
        if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
            out[rows] = ivf.sq.decode(ivf.sq.compute_codes(residual)) + centroid
        else:
            out[rows] = ivf.pq.decode(ivf.pq.compute_codes(residual)) + centroid
    return out


@contextmanager
def scored_rows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the stored vectors scored; any FAISS search or whole-index isin fails."""
    counts: list[int] = []
    vectors_of = VectorIndex._vectors_of

    def spy(self: VectorIndex, rows: np.ndarray) -> np.ndarray:
        counts.append(len(rows))
        return vectors_of(self, rows)

    def no_faiss(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a selective filter ran a FAISS search")

    def no_isin(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a selective filter ran np.isin")

    with monkeypatch.context() as patch:
        patch.setattr(VectorIndex, "_vectors_of", spy)
        patch.setattr(VectorIndex, "_run", no_faiss)
        patch.setattr(np, "isin", no_isin)
        yield counts


def trained(name: str, model: Model, items: int = 3000) -> VectorIndex:
    """An index of ``items`` one-vector items (keys 1..items), trained if an IVF."""
    index = VectorIndex(DIM, SPECS[name], deferred=True)
    items = max(items, 10_000) if name == "ivf-pq" else items  # PQ trains on 9,984 or more
    model.upsert(index, list(range(1, items + 1)), [1] * items, seed=0)
    index.finish()
    assert index.trained
    return index


def assert_exact(
    index: VectorIndex, model: Model, q: np.ndarray, k: int, allowed: list[int]
) -> None:
    hits = index.search(q, k, np.array(allowed, dtype=np.int64))
    want = model.top(index, q, k, allowed)
    assert [(h.pk, h.segment) for h in hits] == want
    stored = {pk: decoded(index, model.items[pk]) for pk, _ in want}
    exact = [float(stored[pk][seg].astype(np.float64) @ q) for pk, seg in want]
    np.testing.assert_allclose([h.score for h in hits], exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize("decode_share", [1, vector_index.IVF_DECODE_SHARE])
@pytest.mark.parametrize("name", SPECS)
def test_selective_filters_match_numpy_with_segments_deletions_and_k_past_matches(
    name: str, decode_share: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trained IVF decodes the rows of the smallest filters, scans its lists past that.
    monkeypatch.setattr(vector_index, "IVF_DECODE_SHARE", decode_share)
    model = Model()
    index = trained(name, model)
    model.upsert(index, [5000, 5001, 17], [7, 3, 4], seed=1)  # segments; 17 replaced
    model.remove(index, [20, 21, 5001])
    rng = np.random.default_rng(2)
    for trial in range(12):
        allowed = rng.choice(np.arange(1, 3100), 30, replace=False).tolist()
        allowed += [5000, 5001, 17, 20, 10**9]  # several segments, deleted, never added
        q = unit(1, 100 + trial)[0]
        for k in (1, 10, 40):  # 40: past the 30-odd live matches
            assert_exact(index, model, q, k, allowed)
    assert len(index.search(unit(1, 3)[0], 40, np.array([20, 21, 10**9]))) == 0


@pytest.mark.parametrize("name", SPECS)
def test_a_selective_filter_scores_only_the_allowed_vectors(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model()
    index = trained(name, model)
    model.upsert(index, [9000], [5], seed=4)
    model.remove(index, [3])
    allowed = [1, 2, 3, 9000, 2999]  # 3 deleted: 1 + 1 + 5 + 1 vectors left
    index.search(unit(1, 5)[0], 10, np.array(allowed))  # the key lookup is built once
    with scored_rows(monkeypatch) as counts:
        hits = index.search(unit(1, 6)[0], 10, np.array(allowed))
    assert counts == [8]
    assert {h.pk for h in hits} == {1, 2, 9000, 2999}


@pytest.mark.parametrize("tail_max", [8, vector_index.OWNER_TAIL_MAX])
@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf-sq8"])
def test_the_key_lookup_follows_appends_removals_compactions_and_training(
    name: str, tail_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Labels added since the sorted map was built: a tail of their own, merged when long.
    monkeypatch.setattr(vector_index, "OWNER_TAIL_MAX", tail_max)
    model = Model()
    index = VectorIndex(DIM, SPECS[name])  # an IVF trains on its own, mid-way
    rng = np.random.default_rng(7)
    next_pk = 1
    for step in range(40):
        count = int(rng.integers(1, 400))
        pks = list(range(next_pk, next_pk + count))
        next_pk += count
        model.upsert(index, pks, rng.integers(1, 4, count).tolist(), seed=10 + step)
        if step % 3 == 2:  # drop a third of what is there: compactions on flat and ivf
            live = list(model.items)
            model.remove(index, rng.choice(live, len(live) // 3, replace=False).tolist())
        if step % 4 == 3 and model.items:  # replace a few: their rows move to the end
            some = rng.choice(list(model.items), 5).tolist()
            model.upsert(index, list(dict.fromkeys(some)), [2] * len(set(some)), seed=step)
        allowed = rng.choice(np.arange(1, next_pk), min(60, next_pk - 1), replace=False)
        assert_exact(index, model, unit(1, 500 + step)[0], 10, allowed.tolist())
    assert index.trained


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf", "ivf-sq8"])
def test_loose_filters_still_return_only_and_enough_allowed_items(name: str) -> None:
    model = Model()
    index = trained(name, model, items=6000)
    allowed = np.arange(1, 6001, 2)  # half: the bitmap and FAISS path
    hits = index.search(unit(1, 8)[0], 25, allowed)
    assert len(hits) == 25 and all(h.pk % 2 == 1 for h in hits)
    if name == "flat":
        assert [(h.pk, h.segment) for h in hits] == model.top(
            index, unit(1, 8)[0], 25, allowed.tolist()
        )


def test_ties_go_to_the_vector_added_first() -> None:
    model = Model()
    index = trained("flat", model, items=100)
    same = unit(1, 9)
    index.upsert(np.array([300, 200, 400]), np.repeat(same, 3, axis=0))
    hits = index.search(same[0], 3, np.array([400, 200, 300]))
    assert [h.pk for h in hits] == [300, 200, 400]


def test_an_ivf_snapshot_without_a_direct_map_is_given_one() -> None:
    model = Model()
    index = trained("ivf-sq8", model)
    faiss.extract_index_ivf(index._index).set_direct_map_type(faiss.DirectMap.NoMap)
    restored = VectorIndex.from_bytes(DIM, index.to_bytes(), SPECS["ivf-sq8"])
    assert_exact(restored, model, unit(1, 11)[0], 10, list(range(1, 400, 7)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["flat", "hnsw"]),
    counts=st.lists(st.integers(1, 4), min_size=1, max_size=60),
    removed=st.sets(st.integers(0, 59), max_size=20),
    allowed=st.lists(st.integers(0, 70), max_size=40),
    k=st.integers(1, 50),
    query=st.lists(
        st.floats(-1, 1, allow_nan=False, allow_subnormal=False), min_size=DIM, max_size=DIM
    ),
)
def test_property_selective_search_is_numpy_over_the_allowed(
    name: str,
    counts: list[int],
    removed: set[int],
    allowed: list[int],
    k: int,
    query: list[float],
) -> None:
    model = Model()
    index = VectorIndex(DIM, SPECS[name])
    model.upsert(index, list(range(len(counts))), counts, seed=len(counts))
    model.remove(index, sorted(removed))
    q = np.array(query, dtype=np.float32)
    hits = index.search(q, k, np.array(allowed, dtype=np.int64))
    want = model.top(index, q, k, allowed)
    assert len(hits) == len(want) == min(k, len(set(allowed) & set(model.items)))
    assert len({h.pk for h in hits}) == len(hits) and {h.pk for h in hits} <= set(allowed)
    # Scores equal to float32 rounding may swap places; the scores themselves may not.
    best = [float(model.items[pk][segment].astype(np.float64) @ q) for pk, segment in want]
    np.testing.assert_allclose([h.score for h in hits], best, rtol=0, atol=1e-5)


def test_an_item_whose_segments_crowd_the_top_leaves_room_for_k_others() -> None:
    model = Model()
    index = trained("flat", model, items=500)
    q = unit(1, 12)[0]
    near = l2_normalize(q + 0.01 * unit(200, 13)).astype(np.float32)  # 200 segments at q
    index.upsert(np.array([900]), near, np.array([200]))
    model.items[900] = near
    allowed = [900, *range(1, 400)]
    assert_exact(index, model, q, 5, allowed)
    assert index.search(q, 5, np.array(allowed))[0].pk == 900
