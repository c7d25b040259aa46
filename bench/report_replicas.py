"""The replicas phase in the report: its targets and its section of results.md (a module of
its own: report.py is past the length a file should have)."""

from __future__ import annotations

from typing import Any

LAG_P99_MS = 1000.0  # the bound on another process's visibility lag
PG_LAG_P99_MS = 250.0  # its target on Postgres, where a commit's notification wakes followers
QPS_RATIO = 1.6  # the target for 2 processes over 1 where Python and HTTP bind


def replicas_targets(replicas: dict[str, Any]) -> list[dict[str, Any]]:
    """Lag p99 on another process, items it never answered with, and the QPS ratio."""
    other = replicas["lag"]["other"]
    p99, missed = other["p99_ms"], other["missed"]
    ratio = replicas["throughput"]["ratio"]
    workers = replicas["throughput"]["rows"][-1]["processes"]
    return [
        {
            "name": "replicas: write on A to found on B, p99 (ms)",
            "target": f"<= {LAG_P99_MS:.0f}",
            "value": p99,
            "pass": None if p99 is None else p99 <= LAG_P99_MS,
        },
        {
            "name": f"replicas: items B never answered with (within {_s(replicas)} s)",
            "target": "0",
            "value": missed,
            "pass": missed == 0,
        },
        *_postgres_targets(replicas.get("lag_postgres")),
        {
            "name": f"replicas: search QPS, {workers} processes / 1",
            "target": f">= {QPS_RATIO}",
            "value": ratio,
            "pass": None if ratio is None else ratio >= QPS_RATIO,
        },
    ]


def _postgres_targets(lag: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not lag or "skipped" in lag:
        return []
    p99 = lag["other"]["p99_ms"]
    return [
        {
            "name": "replicas on Postgres: write on A to found on B, p99 (ms)",
            "target": f"<= {PG_LAG_P99_MS:.0f}",
            "value": p99,
            "pass": None if p99 is None else p99 <= PG_LAG_P99_MS,
        },
        {
            "name": "replicas on Postgres: items B never answered with",
            "target": "0",
            "value": lag["other"]["missed"],
            "pass": lag["other"]["missed"] == 0,
        },
    ]


def _s(replicas: dict[str, Any]) -> str:
    return f"{replicas['lag']['missed_after_s']:g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def replicas_md(replicas: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    """Lag of B and of A itself, then QPS of 1 and N processes."""
    lag, qps = replicas["lag"], replicas["throughput"]
    lines = [
        "## Several server processes",
        "",
        f"Two `mmr serve` processes (model {replicas['model']}, fp32) on one data dir and "
        f"{replicas['database']}; follow interval {replicas['follow_interval_s']:g} s. "
        f"{lag['writers']} writers post text items through A at {lag['write_rate']:g}/s "
        f"({lag['written_per_s']:.1f}/s acknowledged, {lag['write_errors']} failed, "
        f"{lag['seconds']:.0f} s); a prober on each server searches every "
        f"{lag['probe_interval_s'] * 1000:.0f} ms for the items acknowledged and not yet found "
        "(one search, a metadata filter on their ids). Lag = acknowledgement by A to the end "
        "of the first search that answered with the item: it includes up to one probe "
        "interval and a search's round trip, which the row of A itself shows.",
        "",
        "| searched on | items | found | missed | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += _lag_rows(lag)
    postgres = replicas.get("lag_postgres") or {"skipped": "not measured"}
    if "skipped" in postgres:
        lines += ["", f"On Postgres: not measured ({postgres['skipped']})."]
    else:
        lines += [
            "",
            "The same on Postgres (a schema of its own on the local server), where each "
            "commit notifies the followers (`LISTEN`/`NOTIFY`) and polling is the safety net "
            f"({postgres['written_per_s']:.1f}/s acknowledged, {postgres['write_errors']} "
            "failed):",
            "",
            "| searched on | items | found | missed | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|",
            *_lag_rows(postgres),
        ]
    lines += [
        "",
        f"Search throughput: {qps['n']} vectors of dim {qps['dim']} (flat), "
        f'`{{"vector", "k": {qps["k"]}}}` from {qps["clients"]} closed-loop keep-alive '
        f"connections of {_generator(qps)}, on {machine['cpu']} "
        f"({machine['usable_cores']} usable cores, shared by the servers and the clients). "
        "CPU columns: cores busy on average over the run.",
        "",
        "| server | QPS | p50 ms | p99 ms | errors | connections per process | server CPU | "
        "client CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in qps["rows"]:
        lines.append(
            f"| `{row['argv']}` | {row['qps']:.0f} | {row['p50_ms'] or 0:.2f} | "
            f"{row['p99_ms'] or 0:.2f} | {row['errors']} | "
            f"{' / '.join(map(str, row['connections']))} | {row['server_cores']:.2f} | "
            f"{row['client_cores']:.2f} |"
        )
    ratio = qps["ratio"]
    lines += ["", f"{qps['rows'][-1]['processes']} processes / 1: **{ratio or 0:.2f}x**.", ""]
    return lines


def _lag_rows(lag: dict[str, Any]) -> list[str]:
    rows = (("B (another process)", lag["other"]), ("A (the writer)", lag["same"]))
    return [
        f"| {label} | {row['items']} | {row['found']} | {row['missed']} | "
        f"{_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} | {_ms(row['p99_ms'])} | "
        f"{_ms(row['max_ms'])} |"
        for label, row in rows
    ]


def _generator(qps: dict[str, Any]) -> str:
    if qps["rows"][0].get("generator") == "wrk":
        return "`wrk` (one thread, a C load generator: it leaves the cores to the servers)"
    return "client threads in the bench process"
