"""The hybrid phase in the report: quality and latency of vector, lexical and hybrid search."""

from __future__ import annotations

from typing import Any

TARGET_SETS = ("exact tokens", "meaning")


def hybrid_targets(hybrid: dict[str, Any]) -> list[dict[str, Any]]:
    """Per database and target set: hybrid's recall@10 and MRR@10 over the better of
    vector's and lexical's."""
    out = []
    for database in sorted({r["database"] for r in hybrid["rows"]}):
        for name in TARGET_SETS:
            rows = {
                r["mode"]: r
                for r in hybrid["rows"]
                if r["database"] == database and r["set"] == name
            }
            if not {"vector", "lexical", "hybrid"} <= rows.keys():
                continue
            for metric in ("recall_at_10", "mrr_at_10"):
                best = max(rows["vector"][metric], rows["lexical"][metric])
                value = rows["hybrid"][metric]
                out.append(
                    {
                        "name": f"hybrid: {database} {name}, {metric} - best of the two",
                        "target": ">= 0",
                        "value": value - best,
                        "pass": value >= best,
                    }
                )
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def hybrid_md(hybrid: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    cfg = hybrid["config"]
    lines = [
        "## Lexical and hybrid search",
        "",
        f"Model {cfg['model']}; per set {cfg['items']} text items and {cfg['queries']} "
        f"queries (seed {cfg['seed']}), k = 10, one client in the bench process (the "
        "encoder included in the latency). Vector mode is the baseline; the RRF row fuses "
        f"the service's own vector and lexical top {cfg['depth']} by reciprocal rank "
        f"(k = {cfg['rrf_k']}), the usual alternative to hybrid's weighted score. "
        f"On {machine['cpu']} ({machine['usable_cores']} usable cores).",
        "",
        "| database | set | mode | recall@10 | MRR@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in hybrid["rows"]:
        lines.append(
            f"| {r['database']} | {r['set']} | {r['mode']} | {r['recall_at_10']:.3f} | "
            f"{r['mrr_at_10']:.3f} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} |"
        )
    loads = ", ".join(f"{k} {v:.1f} s" for k, v in hybrid.get("load_s", {}).items())
    lines += ["", f"Writing the sets (batches of {cfg['batch']}): {loads}.", ""]
    if hybrid.get("writes"):
        lines += [
            "What the full-text index costs a batch write: the exact-token set's texts, with "
            f"two metadata values each, in batches of {cfg['batch']} through "
            "`ItemStore.upsert_many` (SQL only: no encoder, no HTTP), into a database at "
            "migration 0008 and one at 0007, alternately; items/s of each round, the ratio "
            "of the medians.",
            "",
            "| database | items | with the index | without | ratio |",
            "|---|---|---|---|---|",
        ]
        for w in hybrid["writes"]:
            fmt = ", ".join
            lines.append(
                f"| {w['database']} | {w['items']} | {fmt(f'{v:.0f}' for v in w['with_index'])} "
                f"| {fmt(f'{v:.0f}' for v in w['without'])} | {w['ratio']:.2f} |"
            )
        lines.append("")
    return lines
