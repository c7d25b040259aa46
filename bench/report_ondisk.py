"""The on-disk IVF phase in the report: the mapped index against the same lists in memory."""

from __future__ import annotations

from typing import Any


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f}"


def _rss(r: dict[str, int]) -> str:
    return f"{r['VmRSS']:,} ({r['RssAnon']:,} anon, {r['RssFile']:,} file)"


def ondisk_md(ondisk: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    cfg = ondisk["config"]
    lines = [
        "## On-disk IVF",
        "",
        f"An `ivf` `sq8` index with `on_disk` in process (the service's VectorIndex and "
        f"snapshot code, no SQL or HTTP), {cfg['queries']} queries one at a time, k = 10, "
        f"recall against an exact pass over every vector; clustered 512-d vectors "
        f"({cfg['centres']} centres). Baseline: the same lists in memory right after the "
        "build; then snapshotted, dropped, loaded mapped from the file (its pages evicted "
        "first: the cold pass) and searched again (warm). RSS in MiB from /proc/self/status. "
        f"On {machine['cpu']} ({machine['usable_cores']} usable cores).",
        "",
        "| vectors | lists / probed | build s | on disk GiB | index | recall@10 | p50 ms "
        "| p95 ms | RSS after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ondisk["rows"]:
        spec = r["spec"]
        head = f"{r['n']:,} | {spec['nlist']} / {spec['nprobe']} | {r['build_s']:.0f} | "
        head += f"{_gib(r['disk_bytes'])}"
        steps = [
            ("in memory", r["memory"], r["rss_built"]),
            ("mapped, cold", r["cold"], r["rss_cold"]),
            ("mapped, warm", r["warm"], r["rss_warm"]),
        ]
        for what, s, rss in steps:
            lines.append(
                f"| {head} | {what} | {s['recall']:.3f} | {s['p50_ms']:.2f} | "
                f"{s['p95_ms']:.2f} | {_rss(rss)} |"
            )
        for s in r.get("nprobe", []):
            lines.append(
                f"| {head} | mapped, nprobe {s['nprobe']} | {s['recall']:.3f} | "
                f"{s['p50_ms']:.2f} | {s['p95_ms']:.2f} | |"
            )
        lines += [
            "",
            f"{r['n']:,} vectors: snapshot written in {r['snapshot_s']:.0f} s, loaded "
            f"(checksum included) in {r['load_s']:.0f} s; RSS with the index dropped "
            f"{_rss(r['rss_dropped'])}, just after the load {_rss(r['rss_loaded'])}.",
            "",
        ]
    return lines
