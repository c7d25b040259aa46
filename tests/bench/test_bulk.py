"""`python -m bench --quick --only bulk`: the batch route against /v1/embed on one server,
texts and images, SQLite and (where it answers) Postgres. Shapes, not numbers: every row
sent every item with no failure, the report has its targets and section."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.config import quick_config
from tests.bench.test_bench import run_bench
from tests.postgres_gate import REQUIRE_VAR


@pytest.mark.slow
def test_quick_bulk_run_writes_every_item_beside_the_embed_baseline(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "--only", "bulk")
    assert results["errors"] == []
    bulk = results["bulk"]
    databases = ["SQLite"] + ([] if "Postgres" in bulk["skipped"] else ["Postgres"])
    if os.environ.get(REQUIRE_VAR):
        assert databases == ["SQLite", "Postgres"]
    cfg = quick_config().bulk
    rows = bulk["rows"]
    assert [(r["database"], r["kind"]) for r in rows] == [
        (d, k) for d in databases for k in ("texts", "images")
    ]
    for row in rows:
        assert row["failed"] == 0
        assert row["items"] == (cfg.texts if row["kind"] == "texts" else cfg.images)
        assert row["embed_per_s"] > 0 and row["write_per_s"] > 0
    ingest = bulk["ingest"]  # mmr ingest on a folder of the same files, then resumed
    assert ingest["files"] == cfg.texts + cfg.images
    assert ingest["summary"] == f"ingested {ingest['files']}, skipped 0, failed 0"
    assert ingest["resume_summary"] == f"ingested 0, skipped {ingest['files']}, failed 0"
    migration = bulk["migration"]  # the same items moved to the bench's model, then back
    assert migration["items"] == cfg.texts + cfg.images and migration["target"] == cfg.model
    assert migration["items_per_s"] > 0 and migration["rollback_encoded"] == 0
    names = {t["name"] for t in results["targets"]}
    assert "bulk: SQLite texts, batch write / embed" in names
    assert "## Bulk writes against the encoder" in (tmp_path / "results.md").read_text()
