"""Every index type: recall against exact search, deletions, filters, segments, snapshots."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from index.locks import WouldBlock
from index.spec import IndexSpec
from index.vector_index import VectorIndex, configure_faiss_threads
from models.encoders.aligner import l2_normalize

DIM = 32
SPECS = {
    "flat": IndexSpec(),
    "hnsw": IndexSpec(type="hnsw", m=16, ef_construction=40, ef_search=32),
    "ivf": IndexSpec(type="ivf", nlist=32, nprobe=8),
    "ivf-sq8": IndexSpec(type="ivf", nlist=32, nprobe=8, quantizer="sq8"),
    "ivf-pq": IndexSpec(type="ivf", nlist=32, nprobe=8, quantizer="pq", pq_m=16),
}
# Recall@10 each type must keep on clustered data (16-byte PQ codes lose the most).
RECALL = {"flat": 1.0, "hnsw": 0.9, "ivf": 0.9, "ivf-sq8": 0.9, "ivf-pq": 0.5}


def clustered(n: int, seed: int = 0, centres: int = 50, latent: int = 8) -> np.ndarray:
    """Embedding-like data: clusters in a low-dimensional latent space, projected up."""
    shape = np.random.default_rng(1234)  # one space for data and queries alike
    middle, lift = shape.normal(size=(centres, latent)), shape.normal(size=(latent, DIM))
    rng = np.random.default_rng(seed)
    points = middle[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, latent))
    rows = points @ lift + 0.1 * rng.normal(size=(n, DIM))
    return l2_normalize(rows).astype(np.float32)


def exact_top(data: np.ndarray, q: np.ndarray, k: int, keys: np.ndarray) -> list[int]:
    order = np.argsort(-(data @ q), kind="stable")[:k]
    return keys[order].tolist()


def built(name: str, data: np.ndarray, keys: np.ndarray | None = None) -> VectorIndex:
    index = VectorIndex(DIM, SPECS[name], deferred=True)
    index.upsert(np.arange(1, len(data) + 1) if keys is None else keys, data)
    index.finish()
    return index


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(12_000)


@pytest.mark.parametrize("name", SPECS)
def test_recall_at_10_against_exact_search(name: str, data: np.ndarray) -> None:
    index = built(name, data)
    assert index.trained and index.size == len(data)
    keys = np.arange(1, len(data) + 1)
    queries = clustered(50, seed=1)
    found = [
        len(set(exact_top(data, q, 10, keys)) & {h.pk for h in index.search(q, 10)})
        for q in queries
    ]
    assert sum(found) / (10 * len(queries)) >= RECALL[name]


@pytest.mark.parametrize("name", SPECS)
def test_deleted_and_replaced_items_never_come_back(name: str, data: np.ndarray) -> None:
    index = built(name, data[:3000])
    queries = data[:200]
    doomed = np.arange(1, 101)  # the items the queries are copies of (first 100)
    index.remove(doomed)
    # Item 150 moves onto query 0's spot: its new vector is found, its old one is gone.
    index.upsert(np.array([150]), data[0])
    for q in queries[:100]:
        hits = index.search(q, 10)
        assert len(hits) == 10 and not {h.pk for h in hits} & set(doomed.tolist())
    assert index.search(data[0], 1)[0].pk == 150
    moved = [h for h in index.search(data[149], 10) if h.pk == 150]
    assert not moved or moved[0].score == pytest.approx(float(data[0] @ data[149]), abs=0.05)
    assert index.size == 2900 and index.vectors == 2900


@pytest.mark.parametrize("name", SPECS)
def test_filters_return_only_and_all_allowed_items(name: str, data: np.ndarray) -> None:
    index = built(name, data)
    keys = np.arange(1, len(data) + 1)
    rng = np.random.default_rng(3)
    for size in (3, 40, 600, 6000):  # very selective to loose
        allowed = np.sort(rng.choice(keys, size, replace=False))
        q = clustered(1, seed=size)[0]
        hits = index.search(q, 10, allowed)
        assert len(hits) == min(10, size)
        assert {h.pk for h in hits} <= set(allowed.tolist())
        if size <= 600 and name in ("flat", "hnsw", "ivf"):
            # Selective filters are answered exhaustively: the exact top-k of the allowed.
            assert [h.pk for h in hits] == exact_top(data[allowed - 1], q, 10, allowed)
    assert index.search(data[0], 10, np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize("name", SPECS)
def test_segments_deduplicate_on_every_type(name: str, data: np.ndarray) -> None:
    index = built(name, data[:5000], keys=np.arange(10, 5010))
    q = data[6000]  # not in the index; item 7's 20 segments sit around it
    near = l2_normalize(q + 0.05 * clustered(20, seed=9)).astype(np.float32)
    index.upsert(np.array([7]), near, np.array([20]))
    hits = index.search(q, 5)
    assert hits[0].pk == 7 and len({h.pk for h in hits}) == 5
    index.remove(np.array([7]))
    assert 7 not in {h.pk for h in index.search(q, 5)}


@pytest.mark.parametrize("name", SPECS)
def test_snapshot_keeps_type_masks_and_results(name: str, data: np.ndarray) -> None:
    index = built(name, data[:4000])
    index.remove(np.arange(1, 51))
    restored = VectorIndex.from_bytes(DIM, index.to_bytes(), SPECS[name])
    assert restored.describe() == index.describe()
    for q in data[:60:7]:
        assert restored.search(q, 10) == index.search(q, 10)
    other = IndexSpec(type="hnsw") if name != "hnsw" else IndexSpec()
    with pytest.raises(ValueError, match="index"):
        VectorIndex.from_bytes(DIM, index.to_bytes(), other)


def test_ivf_searches_exactly_until_it_can_train(data: np.ndarray) -> None:
    spec = IndexSpec(type="ivf", nlist=16, nprobe=1)
    index = VectorIndex(DIM, spec)
    index.upsert(np.arange(1, 501), data[:500])
    assert not index.trained  # 16 lists want 624 points
    keys = np.arange(1, 501)
    for q in data[1000:1010]:
        assert [h.pk for h in index.search(q, 10)] == exact_top(data[:500], q, 10, keys)
    index.upsert(np.arange(501, 701), data[500:700])
    assert index.trained and index.describe()["params"]["nlist"] == 16
    assert index.size == 700


def test_auto_list_count_follows_the_size() -> None:
    spec = IndexSpec(type="ivf")
    assert spec.lists_for(10_000) == 256
    assert spec.lists_for(100_000) == 1024
    assert spec.lists_for(1_000_000) == 4096
    assert spec.train_at() == 10_000


def test_deleted_vectors_are_compacted_on_flat_and_ivf_masked_on_hnsw(data: np.ndarray) -> None:
    for name in ("flat", "ivf", "hnsw"):
        index = built(name, data[:4000])
        index.remove(np.arange(1, 2001))
        expected_dead = 2000 if name == "hnsw" else 0
        assert index.deleted == expected_dead, name
        assert index.vectors == 2000 and index.size == 2000
        hits = index.search(data[0], 10)
        assert len(hits) == 10 and min(h.pk for h in hits) > 2000


def test_settings_are_checked_against_the_dimension() -> None:
    with pytest.raises(ValueError, match="divide"):
        VectorIndex(DIM, IndexSpec(type="ivf", quantizer="pq", pq_m=5))
    with pytest.raises(ValueError, match="takes no"):
        IndexSpec.of("flat", {"m": 4})
    with pytest.raises(ValueError, match="unknown index type"):
        IndexSpec.of("annoy")
    assert IndexSpec.of("hnsw", {"m": 8}).params() == {
        "m": 8,
        "ef_construction": 80,
        "ef_search": 64,
    }


def test_searches_run_on_the_configured_openmp_threads(data: np.ndarray) -> None:
    index = built("flat", data[:1000])
    configure_faiss_threads(1)
    seen: list[int] = []

    def search() -> None:  # a fresh thread starts with OpenMP's default (every core)
        index.search(data[0], 5)
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=search)
    thread.start()
    thread.join()
    assert seen == [1]


def test_scan_size_follows_what_a_search_compares(data: np.ndarray) -> None:
    assert built("flat", data[:3000]).scan_size() == 3000
    ivf = built("ivf", data[:3000])  # 32 lists, 8 probed: the centroids and a quarter
    assert ivf.trained and ivf.scan_size() == 32 + 750
    untrained = VectorIndex(DIM, IndexSpec(type="ivf", nlist=16))
    untrained.upsert(np.arange(1, 101), data[:100])
    assert untrained.scan_size() == 100  # exact until trained
    hnsw = built("hnsw", data[:3000])  # 2 x 16 neighbours x 32 candidates
    assert hnsw.scan_size() == 1024
    assert hnsw.scan_size(k=50) == 1600  # the candidate list grows to k
    assert built("hnsw", data[:500]).scan_size() == 500


def test_a_search_that_may_not_wait_stops_before_widening(data: np.ndarray) -> None:
    index = built("ivf", data[:3000])  # 8 of 32 lists: ~750 vectors in the first pass
    q = data[3001]
    assert index.search(q, 10, wait=False) == index.search(q, 10)
    with pytest.raises(WouldBlock):
        index.search(q, 900, wait=False)
    assert len(index.search(q, 900)) == 900  # the waiting search widens to all lists
