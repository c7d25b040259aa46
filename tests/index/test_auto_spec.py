"""The ``auto`` index type: the spec is a pure function of the size, recorded with its type,
and the rule for when a collection's index no longer fits its size."""

from __future__ import annotations

import pytest

from index import spec as spec_module
from index.spec import (
    AUTO_EXACT_MAX,
    AUTO_MEMORY_MAX,
    IndexSpec,
    auto_params,
    auto_retune,
    auto_spec,
)

DIM = 512


@pytest.mark.parametrize("vectors", [0, 1, 1_000, AUTO_EXACT_MAX])
def test_small_collections_are_exact(vectors: int) -> None:
    assert auto_spec(vectors, DIM) == IndexSpec(type="flat")
    assert auto_params(vectors, DIM) == {"type": "flat"}


def test_larger_collections_get_a_graph_whose_search_list_grows_with_the_size() -> None:
    above = auto_spec(AUTO_EXACT_MAX + 1, DIM)
    assert above == IndexSpec(type="hnsw", m=32, ef_construction=80, ef_search=64)
    assert auto_spec(100_000, DIM).ef_search == 64
    assert auto_spec(1_000_000, DIM).ef_search == 128
    assert auto_spec(3_000_000, DIM).ef_search == 256
    sizes = [AUTO_EXACT_MAX + 1, 10**5, 10**6, 2 * 10**6, 3 * 10**6]
    efs = [auto_spec(n, DIM).ef_search for n in sizes]
    assert efs == sorted(efs)  # never fewer candidates for more vectors


def test_past_a_graph_of_8_gib_the_lists_go_on_disk() -> None:
    # At 512 dimensions a graph takes 2,316 bytes a vector: 8 GiB at ~3.7M vectors.
    last = AUTO_MEMORY_MAX // IndexSpec(type="hnsw").bytes_per_vector(DIM)
    assert auto_spec(last, DIM).type == "hnsw"
    disk = auto_spec(last + 1, DIM)
    assert disk == IndexSpec(type="ivf", nlist=1024, nprobe=16, quantizer="sq8", on_disk=True)
    # What was measured at 10M (docs/index-types.md): 1,024 lists, 16 probed.
    assert auto_spec(10_000_000, DIM) == disk
    assert auto_spec(40_000_000, DIM).nlist == 4096  # lists of ~10,000 vectors
    # Wider vectors get there sooner; the stored params give the spec back.
    assert auto_spec(2_000_000, 1024).type == "ivf"
    assert IndexSpec.of("auto", auto_params(10_000_000, DIM)) == disk


def test_when_lists_on_disk_no_longer_fit_the_size() -> None:
    last = AUTO_MEMORY_MAX // IndexSpec(type="hnsw").bytes_per_vector(DIM)
    graph, disk = auto_spec(last, DIM), auto_spec(last + 1, DIM)
    assert "on disk" in (auto_retune(graph, vectors=last + 1, deleted=0, dim=DIM) or "")
    assert auto_retune(disk, vectors=last + 1, deleted=0, dim=DIM) is None
    # Back to a graph only under half the budget (no flip on every write).
    assert auto_retune(disk, vectors=last // 2 + 1, deleted=0, dim=DIM) is None
    assert "fits in memory" in (auto_retune(disk, vectors=last // 2 - 1, deleted=0, dim=DIM) or "")
    # Grown fourfold: more lists.
    assert auto_retune(disk, vectors=20_000_000, deleted=0, dim=DIM) is None  # 2,048 wanted
    assert "get slow" in (auto_retune(disk, vectors=40_000_000, deleted=0, dim=DIM) or "")


def test_the_stored_params_give_back_the_spec_in_use() -> None:
    for n in (0, 50_000, 1_000_000):
        assert IndexSpec.of("auto", auto_params(n, DIM)) == auto_spec(n, DIM)
    assert IndexSpec.of("auto", {}) == IndexSpec(type="flat")  # nothing chosen yet: exact
    with pytest.raises(ValueError, match="auto index params"):
        IndexSpec.of("auto", {"type": "auto"})
    with pytest.raises(ValueError, match="takes no"):
        IndexSpec.of("auto", {"type": "flat", "m": 3})


def test_the_threshold_is_one_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "AUTO_EXACT_MAX", 20)
    assert auto_spec(20, DIM).type == "flat" and auto_spec(21, DIM).type == "hnsw"


def test_when_an_index_no_longer_fits_its_size() -> None:
    flat, n = IndexSpec(type="flat"), AUTO_EXACT_MAX
    graph = auto_spec(n + 1, DIM)
    assert auto_retune(flat, vectors=n, deleted=0, dim=DIM) is None
    assert "past" in (auto_retune(flat, vectors=n + 1, deleted=0, dim=DIM) or "")
    # Between half the threshold and the threshold a graph stays (no flip on every write).
    assert auto_retune(graph, vectors=n, deleted=0, dim=DIM) is None
    assert auto_retune(graph, vectors=n // 2, deleted=0, dim=DIM) is None
    assert "under" in (auto_retune(graph, vectors=n // 2 - 1, deleted=0, dim=DIM) or "")
    # Masked deletions: rebuilt past 20% of what the graph holds.
    assert auto_retune(graph, vectors=4 * n, deleted=n, dim=DIM) is None  # 20% exactly
    assert "deleted" in (auto_retune(graph, vectors=4 * n, deleted=n + 1, dim=DIM) or "")
    # A size that wants a longer candidate list.
    assert auto_retune(graph, vectors=250_000, deleted=0, dim=DIM) is None
    assert "ef_search 128" in (auto_retune(graph, vectors=250_001, deleted=0, dim=DIM) or "")
    bigger = auto_spec(250_001, DIM)
    assert auto_retune(bigger, vectors=250_001, deleted=0, dim=DIM) is None
    assert auto_retune(bigger, vectors=200_000, deleted=0, dim=DIM) is None  # no churn down
