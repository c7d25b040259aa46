"""bench/ondisk.py at a tiny size: the streamed ground truth is the exact one, and a run
measures the in-memory baseline, the mapped index cold and warm, and cleans up."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data import Mixture, exact_top_k
from bench.ondisk import CHUNK, OndiskConfig, _TopK, measure


def test_the_streamed_ground_truth_is_the_exact_top_10() -> None:
    mixture = Mixture(32, 20, seed=0)
    vectors, queries = mixture.sample(2500, seed=1), mixture.sample(30, seed=2)
    top = _TopK(len(queries))
    for start in range(0, len(vectors), 700):  # uneven chunks, the last one short
        top.update(queries @ vectors[start : start + 700].T, start)
    assert np.array_equal(top.ids(), exact_top_k(vectors, queries))


def test_a_small_run_measures_every_step_and_leaves_no_file(tmp_path: Path) -> None:
    cfg = OndiskConfig(nprobe=8, max_nlist=16, queries=20, centres=20, also_nprobe=(16,))
    row = measure(CHUNK // 20, cfg, tmp_path, lambda line: None)
    assert row["spec"] == {
        "nlist": 16,
        "nprobe": 8,
        "quantizer": "sq8",
        "pq_m": 64,
        "on_disk": True,
    }
    for step in ("memory", "cold", "warm"):
        assert row[step]["recall"] > 0.8 and row[step]["p50_ms"] > 0
    assert row["cold"]["recall"] == row["memory"]["recall"]  # the same lists, mapped
    assert row["nprobe"][0]["nprobe"] == 16 and row["nprobe"][0]["recall"] >= 0.95
    assert row["disk_bytes"] > 5000 * 512  # SQ8: a byte a dimension
    assert {"VmRSS", "RssAnon", "RssFile"} <= row["rss_warm"].keys()
    assert not list(tmp_path.iterdir())
