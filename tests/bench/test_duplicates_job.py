"""bench/duplicates.py's job section on a small collection: the job and the exact route (its
baseline) list the same pairs, and the table shows both."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.duplicates import job_markdown, measure_job


@pytest.mark.slow  # two servers of random:ViT-B-32 start: about two minutes on 2 cores
def test_the_job_and_its_baseline_list_the_same_pairs(tmp_path: Path) -> None:
    lines: list[str] = []
    rows = measure_job(tmp_path, lines.append, (400,))
    (row,) = rows
    assert row["items"] == 400 and row["same"] is True
    assert row["pairs_job"] == row["pairs_route"] == 8  # 2 % planted copies
    table = job_markdown(rows, {"cpu": "test", "cores": 2})
    assert "| 400 |" in table and "8 / 8 (same)" in table
    assert len(lines) == 1
