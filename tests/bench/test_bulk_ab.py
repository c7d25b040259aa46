"""`python -m bench.bulk_ab`: two checkouts' batch routes in the same turns, beside
/v1/embed. Shapes, not numbers: both servers wrote every item, each side has its ratio."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bulk_ab import ROOT, compare, table
from bench.config import BulkConfig


@pytest.mark.slow
def test_both_checkouts_write_every_item_in_the_same_turns(tmp_path: Path) -> None:
    small = BulkConfig(model="random:mmr-tiny", batch=16, turn=2)
    row = compare(ROOT, "sqlite", "texts", 1, tmp_path, small)
    assert row is not None and row["failed"] == 0
    assert row["items"] == 4 * 2 * 16 and row["turns"] == 4
    for side in ("before", "after"):
        assert row[f"{side}_per_s"] > 0 and row[f"{side}_ratio"] > 0
    text = table([row], "same tree twice", ROOT, small)
    assert "| sqlite | 128 texts |" in text and text.startswith("### same tree twice")
    assert "batches of 16 from 2 clients, turns of 2 batches" in text
