"""PNG plots of a run (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

from bench.report import search_rows


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Every plot the results allow; returns the file names written."""
    written = []
    if "embed" in results:
        written.append(_embed(results["embed"], out / "embed_throughput.png"))
    if "search" in results:
        written.append(_latency(results, out / "search_latency.png"))
        written.append(_recall(results, out / "search_recall.png"))
    return written


def _embed(embed: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, precision in dict.fromkeys((r["model"], r["precision"]) for r in embed["http"]):
        rows = [r for r in embed["http"] if (r["model"], r["precision"]) == (model, precision)]
        line = ax.plot(
            [r["clients"] for r in rows],
            [r["images_per_s"] for r in rows],
            marker="o",
            label=f"service {model} {precision}",
        )[0]
        raw = [r for r in embed["raw"] if (r["model"], r["precision"]) == (model, precision)]
        if raw:
            best = max(r["images_per_s"] for r in raw)
            ax.axhline(best, color=line.get_color(), linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images/s")
    ax.set_title("Embedding throughput (dashed: raw model, best batch)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _latency(results: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = results["search"]["sizes"]
    ax.plot(
        [s["n"] for s in sizes],
        [s["numpy"]["p50_ms"] for s in sizes],
        marker="s",
        color="black",
        label="numpy brute force",
    )
    rows = [r for r in search_rows(results) if r.get("p50_ms") is not None]
    for name in dict.fromkeys(r["type"] for r in rows):
        mine = [r for r in rows if r["type"] == name]
        ax.plot([r["n"] for r in mine], [r["p50_ms"] for r in mine], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("collection size (vectors)")
    ax.set_ylabel("p50 latency, ms (HTTP for index types)")
    ax.set_title("Search latency vs size")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _recall(results: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = [r for r in search_rows(results) if r.get("recall_at_10") is not None]
    for name in dict.fromkeys(r["type"] for r in rows):
        mine = [r for r in rows if r["type"] == name]
        ax.scatter([r["p50_ms"] for r in mine], [r["recall_at_10"] for r in mine], label=name)
        for r in mine:
            ax.annotate(f"{r['n']:,}", (r["p50_ms"], r["recall_at_10"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency over HTTP, ms")
    ax.set_ylabel("recall@10")
    ax.set_title("Recall vs latency (labels: collection size)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
