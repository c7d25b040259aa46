"""results.json (every number) and results.md (tables, targets, the machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.footprint import footprint_md
from bench.report_bulk import bulk_md, bulk_targets
from bench.report_finetune import finetune_md, finetune_targets
from bench.report_hybrid import hybrid_md, hybrid_targets
from bench.report_ondisk import ondisk_md
from bench.report_replicas import replicas_md, replicas_targets

NA = "-"  # a cell with no number
NOTES = (
    "The server is a real `mmr serve` subprocess (own data dir, SQLite, in-process worker); "
    "every baseline runs in the bench process while no server runs.",
    "Clients are threads of the bench process with one keep-alive connection each (the "
    "standard library's http.client with bodies encoded once for embedding and search, "
    "httpx for ingest): on a small machine they take CPU from the server, as real clients "
    "on the same host would.",
    "x numpy = the service's best QPS (one client, or several concurrent ones) over numpy "
    "brute force answering one query at a time.",
    "numpy brute force is the better of OpenBLAS' default thread count and one thread.",
    "Index build = the reindex job's duration (the job builds beside the live index and "
    "swaps); the first search after it is timed apart.",
    "RSS bytes/vector = (server RSS after the build - an empty server's RSS) / n, freed "
    "memory the allocator keeps included; index bytes/vector is the index's own figure.",
    "Quick mode (`--quick`) checks the plumbing with a tiny model; its numbers mean nothing.",
)
ANN_TARGET = {"recall": 0.95, "p50_ms": 2.0, "x_numpy": 50.0}
AUTO_TARGET = {"recall": 0.95, "p50_ms": 5.0}  # the default type, at every size


def _f(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def search_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured (size, type) row with its size and the numpy ratio filled in."""
    out = []
    for size in results.get("search", {}).get("sizes", []):
        for row in size["types"]:
            ratio = None
            best = max([row.get("qps") or 0.0, *(row.get("qps_clients") or {}).values()])
            if best and size["numpy"].get("qps"):
                ratio = best / size["numpy"]["qps"]
            out.append({**row, "n": size["n"], "best_qps": best, "x_numpy": ratio})
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured value and pass/fail (None: not measured)."""
    out: list[dict[str, Any]] = []
    for s in results.get("embed", {}).get("summary", []):
        who = f"{s['model']} {s['precision']}: service@{s['service_clients']}"
        out.append(_target(f"{who} / raw best batch", ">= 0.85", s["vs_raw_best"], 0.85))
        if s["precision"] != "fp32":  # the faster path is how the 2x is to be reached
            out.append(_target(f"{who} / naive fp32", ">= 2x", s["vs_naive_fp32"], 2.0))
    rows = [r for r in search_rows(results) if r.get("status") == "ok"]
    if rows:
        n = max(r["n"] for r in rows)
        at_n = [r for r in rows if r["n"] == n]
        label = "1M" if n == 1_000_000 else f"n={n}"
        explicit = [r for r in at_n if r["params"]["type"] not in ("flat", "auto")]
        out.append(_ann_target(label, explicit))
        flat = [r for r in at_n if r["params"]["type"] == "flat"]
        recall = flat[0]["recall_at_10"] if flat else None
        out.append(_target(f"{label}: flat recall@10", "1.0", recall, 0.9999))
        for r in (r for r in rows if r["params"]["type"] == "auto"):
            out.append(_auto_target(r))
    if results.get("hostile"):
        out += _hostile_targets(results["hostile"])
    if results.get("replicas"):
        out += replicas_targets(results["replicas"])
    if results.get("bulk"):
        out += bulk_targets(results["bulk"])
    if results.get("finetune"):
        out += finetune_targets(results["finetune"])
    if results.get("hybrid"):
        out += hybrid_targets(results["hybrid"])
    decode = results.get("ingest", {}).get("decode")
    if decode:
        out.append(_target("JPEG decode: service / plain Pillow", ">= 2x", decode["speedup"], 2.0))
        out.append(
            _target(
                "JPEG decode: cosine plain vs draft (min)", ">= 0.99", decode["cosine_min"], 0.99
            )
        )
    return out


def _hostile_targets(hostile: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS under the bound, and no 500, under hostile input."""
    errors = sum(a["statuses"].get("500", 0) for a in hostile["attacks"])
    peak = hostile["peak_rss_mb"]
    return [
        {
            "name": "hostile input: peak RSS (MB)",
            "target": f"<= {hostile['bound_mb']}",
            "value": peak,
            "pass": peak <= hostile["bound_mb"],
        },
        {"name": "hostile input: answers 500", "target": "0", "value": errors, "pass": errors == 0},
    ]


def _target(name: str, want: str, value: float | None, floor: float) -> dict[str, Any]:
    return {
        "name": name,
        "target": want,
        "value": value,
        "pass": None if value is None else value >= floor,
    }


def _auto_target(r: dict[str, Any]) -> dict[str, Any]:
    """The default index type at one size: recall@10 >= 0.95 and p50 <= 5 ms over HTTP."""
    recall, p50 = r.get("recall_at_10"), r.get("p50_ms")
    served = (r.get("served") or {}).get("type", "?")
    return {
        "name": f"n={r['n']}: auto (serves {served}) recall@10 >= {AUTO_TARGET['recall']}, "
        f"p50 <= {AUTO_TARGET['p50_ms']:g} ms (HTTP)",
        "target": "both",
        "value": f"recall {_f(recall, '.3f')}, p50 {_f(p50, '.2f')} ms",
        "pass": (recall or 0) >= AUTO_TARGET["recall"]
        and (p50 if p50 is not None else float("inf")) <= AUTO_TARGET["p50_ms"],
    }


def _ann_target(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    name = f"{label}: an ANN type with recall@10 >= 0.95, p50 <= 2 ms (HTTP), >= 50x numpy"
    good = [r for r in rows if (r.get("recall_at_10") or 0) >= ANN_TARGET["recall"]]
    best = min(good or rows, key=lambda r: r.get("p50_ms") or float("inf"), default=None)
    if best is None:
        return {"name": name, "target": "all three", "value": None, "pass": None}
    ok = (
        (best.get("recall_at_10") or 0) >= ANN_TARGET["recall"]
        and (best.get("p50_ms") or float("inf")) <= ANN_TARGET["p50_ms"]
        and (best.get("x_numpy") or 0) >= ANN_TARGET["x_numpy"]
    )
    value = (
        f"{best['type']}: recall {_f(best.get('recall_at_10'), '.3f')}, p50 "
        f"{_f(best.get('p50_ms'), '.2f')} ms, x{_f(best.get('x_numpy'), '.0f')}"
    )
    return {"name": name, "target": "all three", "value": value, "pass": ok}


def write_json(results: dict[str, Any], out: Path) -> Path:
    """results.json: every number of the run."""
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def _device(results: dict[str, Any]) -> str:
    """The embedding phase's device, when it was not the CPU (older results have no key)."""
    device = results["config"].get("device", "cpu")
    if device == "cpu":
        return ""
    return f"embedding on {device} ({results['machine'].get('gpu') or 'no GPU seen'}) · "


def write_markdown(results: dict[str, Any], out: Path, plots: list[str]) -> Path:
    """results.md: the machine, the targets, one table per benchmark."""
    m = results["machine"]
    lines = ["# Benchmark results", ""]
    if results["config"]["quick"]:
        lines += ["**Quick mode**: tiny sizes and a tiny model; plumbing, not numbers.", ""]
    lines += [
        f"{m['date']} · commit {m['commit']}{' (dirty)' if m['dirty'] else ''} · "
        f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gib']} GiB · "
        f"{_device(results)}"
        f"Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"faiss {m['faiss']}, numpy {m['numpy']} · `python -m bench {results['argv']}`",
        "",
        *[_merged(what, date) for what, date in (results.get("merged") or {}).items()],
        "## Targets",
        "",
    ]
    mark = {True: "pass", False: "**miss**", None: "not measured"}
    lines += _table(
        ["what", "target", "measured", ""],
        [
            [t["name"], t["target"], _f(t["value"], ".2f"), mark[t["pass"]]]
            for t in results["targets"]
        ],
    )
    if "embed" in results:
        lines += _embed_md(results["embed"])
    if "search" in results:
        lines += _search_md(results)
    if "ingest" in results:
        lines += _ingest_md(results["ingest"])
    if "hostile" in results:
        lines += _hostile_md(results["hostile"])
    if "replicas" in results:
        lines += replicas_md(results["replicas"], m)
    if "bulk" in results:
        lines += bulk_md(results["bulk"], m)
    if "footprint" in results:
        lines += footprint_md(results["footprint"], m)
    if "finetune" in results:
        lines += finetune_md(results["finetune"], m)
    if "video" in results:
        from bench.video import video_md

        lines += video_md(results["video"])
    if "hybrid" in results:
        lines += hybrid_md(results["hybrid"], m)
    if "filtered" in results:
        from bench.filtered import filtered_md

        lines += filtered_md(results["filtered"])
    if "ondisk" in results:
        lines += ondisk_md(results["ondisk"], m)
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in results["errors"]] + [""]
    lines += ["## How", "", *(f"- {note}" for note in NOTES), ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path


def _merged(what: str, date: str | None) -> str:
    """A phase, or some embedding rows, taken from an earlier run by ``--merge``."""
    rows = what.startswith("embed rows")
    subject, verb = (what, "come") if rows else (f"{what} phase", "comes")
    return f"The {subject} {verb} from an earlier run ({date}, kept by `--merge`).\n"


def _embed_md(embed: dict[str, Any]) -> list[str]:
    lines = [
        "## Embedding throughput",
        "",
        "`POST /v1/embed`, one 256x224 JPEG per request, closed-loop clients (keep-alive); "
        "baselines in the bench process with the server stopped: decode + preprocess + "
        "forward, at each batch size (batch 1 = one request, one forward).",
        "",
    ]
    lines += _table(
        ["model", "precision (server)", "clients", "images/s", "p50 ms", "p95 ms", "errors"],
        [
            [
                r["model"],
                f"{r['precision']} ({r['server_model'].get('precision', '?')})",
                str(r["clients"]),
                _f(r["images_per_s"]),
                _f(r["p50_ms"], ".0f"),
                _f(r["p95_ms"], ".0f"),
                str(r["errors"]),
            ]
            for r in embed["http"]
        ],
    )
    lines += _table(
        ["model", "precision (resolved)", "batch", "images/s"],
        [
            [
                r["model"],
                f"{r['precision']} ({r['resolved_precision']})",
                str(r["batch"]),
                _f(r["images_per_s"]),
            ]
            for r in embed["raw"]
        ],
    )
    lines += _table(
        [
            "model",
            "precision",
            "service",
            "raw best (batch)",
            "naive",
            "naive fp32",
            "service / raw best",
            "service / naive fp32",
        ],
        [
            [
                s["model"],
                s["precision"],
                f"{_f(s['service_images_per_s'])} @{s['service_clients']}",
                f"{_f(s['raw_best_images_per_s'])} ({s['raw_best_batch']})",
                _f(s["naive_images_per_s"]),
                _f(s["naive_fp32_images_per_s"]),
                _f(s["vs_raw_best"], ".2f"),
                _f(s["vs_naive_fp32"], ".2f"),
            ]
            for s in embed["summary"]
        ],
    )
    return lines


def _search_md(results: dict[str, Any]) -> list[str]:
    search = results["search"]
    lines = [
        "## Search",
        "",
        f"Model {search['model']} (dim {search.get('dim')}); clustered unit vectors, "
        "queries from the same mixture; vectors loaded below HTTP (SQL), searches over "
        'HTTP (`{"vector", "k": 10}`), one client unless noted. Recall@10 against '
        "numpy's exact top 10. Memory: server RSS after the index is built minus an "
        "empty server's, per vector.",
        "",
    ]
    head = [
        "n",
        "type",
        "status",
        "build s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "QPS",
        "QPS (more clients)",
        "recall@10",
        "x numpy QPS",
        "index bytes/vector",
        "RSS bytes/vector",
    ]
    rows = []
    for size in search["sizes"]:
        np_ = size["numpy"]
        rows.append(
            [
                str(size["n"]),
                f"numpy brute force ({np_.get('blas_threads')} BLAS thr.)",
                "ok",
                NA,
                _f(np_["p50_ms"], ".2f"),
                _f(np_["p95_ms"], ".2f"),
                _f(np_["p99_ms"], ".2f"),
                _f(np_["qps"]),
                NA,
                _f(np_["recall_at_10"], ".3f"),
                "1",
                NA,
                NA,
            ]
        )
    for r in search_rows(results):
        more = ", ".join(f"{_f(v, '.0f')} @{c}" for c, v in (r.get("qps_clients") or {}).items())
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        if r.get("snapshot_during_measurement"):
            status += " (an index snapshot was written meanwhile)"
        index = (r.get("info") or {}).get("index") or {}
        kind = r["type"] + (" (untrained: exact scan)" if index.get("trained") is False else "")
        if r.get("served"):  # auto: the type and settings the server chose
            kind += " -> " + " ".join(
                f"{k}={v}" if k != "type" else v for k, v in r["served"].items()
            )
        per_vector = index["bytes"] / r["n"] if index.get("bytes") and r["n"] else None
        rows.append(
            [
                str(r["n"]),
                kind,
                status,
                _f(r.get("build_s")),
                _f(r.get("p50_ms"), ".2f"),
                _f(r.get("p95_ms"), ".2f"),
                _f(r.get("p99_ms"), ".2f"),
                _f(r.get("qps")),
                more or NA,
                _f(r.get("recall_at_10"), ".3f"),
                _f(r.get("x_numpy"), ".1f"),
                _f(per_vector, ".0f"),
                _f(r.get("bytes_per_vector"), ".0f"),
            ]
        )
    rows.sort(key=lambda r: int(r[0]))
    lines += _table(head, rows)
    lines += _table(
        [
            "n",
            "SQL load s",
            "server start-up s (flat build)",
            "HTTP floor p50 ms (GET /healthz)",
            "RSS empty MiB",
            "RSS loaded MiB",
        ],
        [
            [
                str(s["n"]),
                _f(s["sql_load_s"]),
                _f(s.get("startup_s")),
                _f(s.get("healthz_p50_ms"), ".2f"),
                _f(s["rss_empty_kb"] / 1024, ".0f"),
                _f((s.get("rss_loaded_kb") or 0) / 1024, ".0f"),
            ]
            for s in search["sizes"]
        ],
    )
    return lines


def _ingest_md(ingest: dict[str, Any]) -> list[str]:
    j, d, texts, images = ingest["jpeg"], ingest["decode"], ingest["texts"], ingest["images"]
    intro = (
        f"Model {ingest['model']}; JPEGs {j['width']}x{j['height']} quality {j['quality']} "
        f"({j['distinct']} distinct, {j['mean_bytes'] // 1024} KiB each), one client."
    )
    size = "x".join(map(str, d["full_size"]))
    small = "x".join(map(str, d["service_decoded_size"]))
    cosine = f"{_f(d['cosine_min'], '.4f')} ({_f(d['cosine_mean'], '.4f')})"
    return [
        "## Ingest",
        "",
        intro,
        "",
        *_table(
            ["what", "items", "per request", "items/s"],
            [
                [
                    "texts (JSON batch)",
                    str(texts["items"]),
                    str(texts["batch"]),
                    _f(texts["items_per_s"]),
                ],
                [
                    "JPEGs (multipart batch)",
                    str(images["items"]),
                    str(images["batch"]),
                    _f(images["items_per_s"], ".2f"),
                ],
            ],
        ),
        *_table(
            ["decode + preprocess", "images/s", "decoded size"],
            [
                ["plain Pillow (full decode)", _f(d["plain_per_s"], ".2f"), size],
                ["service (JPEG draft)", _f(d["service_per_s"], ".2f"), small],
                ["speed-up / cosine min (mean)", _f(d["speedup"], ".2f"), cosine],
            ],
        ),
    ]


def _hostile_md(hostile: dict[str, Any]) -> list[str]:
    """The hostile-input phase: memory, and the answers by status."""
    b, r = hostile["baseline"], hostile["ready"]
    statuses = sorted({s for a in hostile["attacks"] for s in a["statuses"]}, key=int)
    rows = [
        [a["name"], a["what"], str(a["requests"])]
        + [str(a["statuses"].get(s, "")) for s in statuses]
        for a in hostile["attacks"]
    ]
    memory = [
        ["ready (start-up peak)", f"{r['rss_mb']:.0f}", f"{r['hwm_mb']:.0f}"],
        ["after normal requests (baseline)", f"{b['rss_mb']:.0f}", f"{b['hwm_mb']:.0f}"],
        [
            "after the attacks",
            f"{hostile['after']['rss_mb']:.0f}",
            f"{hostile['after']['hwm_mb']:.0f}",
        ],
    ]
    lines = [
        "## Hostile input",
        "",
        f"Model {hostile['model']}, {hostile['settings']}; {hostile['clients']} clients, each "
        f"sending every attack {hostile['rounds']} times in its own order "
        f"({hostile['seconds']:.0f} s). Peak RSS **{hostile['peak_rss_mb']:.0f} MB** "
        f"(bound {hostile['bound_mb']} MB: {'under' if hostile['under_bound'] else 'OVER'}); "
        f"any 500: **{'yes' if hostile['any_500'] else 'no'}**; ready afterwards: "
        f"{'yes' if hostile['ready_after'] else 'no'}.",
        "",
        "| server memory | RSS MB | peak (VmHWM) MB |",
        "|---|---|---|",
        *["| " + " | ".join(row) + " |" for row in memory],
        "",
        "| attack | what | requests | " + " | ".join(statuses) + " |",
        "|" + "---|" * (3 + len(statuses)),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        "Status 0: no answer (the connection was closed).",
        "",
    ]
    return lines
