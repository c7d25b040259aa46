"""`python -m bench --quick --only replicas`: items written through one process are looked
for on both, and searches run against one process and against ``--workers 2``.

Numbers are not asserted (a tiny run on a shared machine); shapes are: every acknowledged
item is accounted for on both servers, both server settings answered searches, each of the
two workers held a connection, the report has its section and targets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import wrk
from bench.config import quick_config
from bench.replicas import Ledger
from tests.bench.test_bench import run_bench
from tests.postgres_gate import REQUIRE_VAR


def test_the_ledger_times_each_server_apart_and_gives_up_on_late_items() -> None:
    ledger = Ledger(["a", "b"], missed_after_s=0.05)
    t0 = time.perf_counter()
    ledger.acked("x", t0)
    ledger.acked("y", t0)
    ledger.found("a", ["x", "y"], t0 + 0.01)
    ledger.found("b", ["x"], t0 + 0.2)
    assert ledger.to_ask("a") == [] and ledger.to_ask("b") == ["y"]
    time.sleep(0.06)
    assert ledger.to_ask("b") == []  # waited on too long: missed
    ledger.found("b", ["y"], time.perf_counter())  # a late answer changes nothing
    a, b = ledger.summary("a"), ledger.summary("b")
    assert (a["found"], a["missed"], b["found"], b["missed"]) == (2, 0, 1, 1)
    assert b["max_ms"] == pytest.approx(200.0) and a["max_ms"] == pytest.approx(10.0)


@pytest.mark.slow
def test_quick_replicas_run_accounts_for_every_item(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "--only", "replicas")
    assert results["errors"] == []
    replicas = results["replicas"]
    postgres = replicas["lag_postgres"]
    if os.environ.get(REQUIRE_VAR):  # CI: the lag on Postgres is measured, not skipped
        assert "skipped" not in postgres, postgres
    for lag in [replicas["lag"]] + ([] if "skipped" in postgres else [postgres]):
        assert lag["other"]["items"] == lag["same"]["items"] > 0
        for side in ("other", "same"):
            row = lag[side]
            assert row["found"] + row["missed"] == row["items"]
            assert row["found"] == 0 or 0 < row["p50_ms"] <= row["max_ms"]
    cfg = quick_config().replicas
    rows = replicas["throughput"]["rows"]
    assert [r["processes"] for r in rows] == [1, cfg.workers]
    for row in rows:
        assert row["requests"] > 0 and row["qps"] > 0
        assert len(row["connections"]) == row["processes"]
    assert all(rows[-1]["connections"])  # every worker served (none was still starting)
    assert replicas["throughput"]["ratio"] > 0
    names = {t["name"] for t in results["targets"]}
    assert {
        "replicas: write on A to found on B, p99 (ms)",
        f"replicas: search QPS, {cfg.workers} processes / 1",
    } <= names
    assert "## Several server processes" in (tmp_path / "results.md").read_text()


WRK_REPORT = """Running 15s test @ http://127.0.0.1:40000
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.80ms    1.10ms  31.10ms   80.00%
  Latency Distribution
     50%  812.00us
     75%    3.29ms
     90%    4.12ms
     99%    1.01s
  43021 requests in 15.00s, 9.92MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   2868.07
Transfer/sec:    677.12KB
"""


def test_a_wrk_report_reads_as_the_python_clients_summary() -> None:
    summary = wrk.parse(WRK_REPORT, connections=8, duration_s=15.0)
    assert summary["errors"] == 10 and summary["requests"] == 43011
    assert summary["per_s"] == pytest.approx(2868.07 * 43011 / 43021)
    assert summary["p50_ms"] == pytest.approx(0.812) and summary["p99_ms"] == 1010.0
    with pytest.raises(ValueError):
        wrk.parse("wrk: connection refused", connections=8, duration_s=1.0)
