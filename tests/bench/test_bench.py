"""`python -m bench --quick`: every phase runs end to end and writes its report.

Numbers are not asserted (the machine is shared and tiny sizes say nothing); shapes are:
the files, the keys, counts above zero, exact search finding the exact answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.__main__ import parse_args
from bench.config import INDEX_TYPES

ROOT = Path(__file__).resolve().parents[2]


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    """``python -m bench --quick ARGS --out OUT``, which must succeed; its results.json."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    return out, run_bench(out)


@pytest.mark.slow
def test_quick_run_writes_report_json_and_plots(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    md = (out / "results.md").read_text()
    for heading in ("## Targets", "## Embedding throughput", "## Search", "## Ingest"):
        assert heading in md
    for png in ("embed_throughput.png", "search_latency.png", "search_recall.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["errors"] == []
    assert {"machine", "config", "embed", "search", "ingest", "targets"} <= set(results)
    assert results["machine"]["cores"] >= 1 and results["machine"]["torch"]


@pytest.mark.slow
def test_quick_embed_has_service_and_baselines(quick_run: tuple[Path, dict[str, Any]]) -> None:
    embed = quick_run[1]["embed"]
    assert {(r["precision"], r["clients"]) for r in embed["http"]} == {
        (p, c) for p in ("fp32", "auto") for c in (1, 2)
    }
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in embed["http"])
    assert all(r["images_per_s"] > 0 for r in embed["raw"])
    assert {r["batch"] for r in embed["raw"]} == {1, 4}
    for s in embed["summary"]:
        assert s["vs_raw_best"] > 0 and s["vs_naive_fp32"] > 0
    # The ceiling runs at the precision the server resolved (auto measures, and two
    # processes' measurements of a tiny model can disagree).
    served = {r["precision"]: r["server_model"]["precision"] for r in embed["http"]}
    assert all(r["resolved_precision"] == served[r["precision"]] for r in embed["raw"])
    assert all(r["server_model"]["device"] == "cpu" for r in embed["http"])


def test_options_for_a_short_run_on_a_gpu() -> None:
    assert parse_args([])[0].device == "cpu"
    cfg = parse_args(["--device", "cuda", "--warmup", "2", "--raw-duration", "1.5"])[0]
    assert (cfg.device, cfg.warmup_s, cfg.raw_duration_s) == ("cuda", 2.0, 1.5)
    with pytest.raises(SystemExit):
        parse_args(["--device", "tpu"])


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_quick_embed_on_cuda(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "--only", "embed", "--device", "cuda")
    http = results["embed"]["http"]
    assert http and all(r["server_model"]["device"] == "cuda" for r in http)
    assert {r["server_model"]["precision"] for r in http} == {"fp32", "fp16"}
    assert {r["resolved_precision"] for r in results["embed"]["raw"]} == {"fp32", "fp16"}
    assert results["machine"]["gpu"]
    assert "embedding on cuda" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_quick_search_exact_is_exact(quick_run: tuple[Path, dict[str, Any]]) -> None:
    (size,) = quick_run[1]["search"]["sizes"]
    assert size["n"] == 2000 and size["numpy"]["recall_at_10"] == 1.0
    rows = {r["type"]: r for r in size["types"]}
    assert set(rows) == set(INDEX_TYPES) and "ivf-sq8-np8" in rows
    flat = rows["flat"]
    assert flat["status"] == "ok", flat["reason"]
    assert flat["recall_at_10"] == 1.0
    assert flat["queries"] > 0 and flat["errors"] == 0 and flat["info"]["count"] == 2000
    auto = rows["auto"]  # the default type: exact at this size, chosen by the server
    assert auto["status"] == "ok", auto["reason"]
    assert auto["served"] == {"type": "flat"} and auto["recall_at_10"] == 1.0
    for row in rows.values():  # every type is measured or says why not
        assert row["status"] == "ok" or row["reason"]
        if row["status"] == "ok":
            assert 0.0 <= row["recall_at_10"] <= 1.0 and row["p50_ms"] > 0


@pytest.mark.slow
def test_quick_ingest_counts_and_decode_agreement(quick_run: tuple[Path, dict[str, Any]]) -> None:
    ingest = quick_run[1]["ingest"]
    assert ingest["texts"]["items"] == ingest["texts"]["sent"] == 64
    assert ingest["images"]["items"] == ingest["images"]["sent"] == 4
    decode = ingest["decode"]
    assert decode["plain_per_s"] > 0 and decode["service_per_s"] > 0
    # The draft decode is smaller than the file and still at least twice the encoder input.
    assert min(decode["service_decoded_size"]) < min(decode["full_size"])
    assert min(decode["service_decoded_size"]) >= 2 * decode["encoder_input"]
    assert decode["cosine_min"] > 0.9


def test_quick_footprint_measures_both_formats(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    rows = results["footprint"]["rows"]
    assert {r["database"] for r in rows} >= {"SQLite"}
    sizes = {(r["database"], r["kind"], r["format"].split(":")[0]): r for r in rows}
    for (database, kind, fmt), row in sizes.items():
        assert row["items"] > 0 and row["items_per_s"] > 0 and row["tables"]["items"] > 0
        if fmt == "this release":  # bytes, not time: a stored item is smaller than before
            earlier = sizes[(database, kind, "earlier release")]
            assert row["bytes_per_item"] < earlier["bytes_per_item"]
    assert "## What a stored item costs" in (out / "results.md").read_text()
