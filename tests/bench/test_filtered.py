"""bench/filtered.py: the old method it keeps as a baseline answers as the index does, and
its table renders."""

from __future__ import annotations

import numpy as np

from bench.data import Mixture
from bench.filtered import DIM, FilteredConfig, before, filtered_md, run
from index.vector_index import VectorIndex


def test_the_kept_old_method_returns_what_the_index_returns() -> None:
    vectors = Mixture(DIM, 20, seed=0).sample(3000, seed=1)
    index = VectorIndex(DIM)
    index.upsert(np.arange(1, 3001), vectors)
    allowed = np.random.default_rng(2).choice(np.arange(1, 3001), 30, replace=False)
    for q in vectors[:5]:
        assert before(index, q, 10, allowed) == index.search(q, 10, allowed)


def test_a_tiny_run_checks_ids_and_renders_its_table() -> None:
    cfg = FilteredConfig(builds=(("flat", 2000),), shares=(0.01,), queries=3, rounds=1)
    result = run(cfg, log=lambda line: None)
    (row,) = result["rows"]
    assert row["allowed"] == 20 and row["selective"] and row["same_ids_as_numpy"] == "3/3"
    assert "| flat | 2,000 | 1.0% | 20 | yes |" in "\n".join(filtered_md(result))
