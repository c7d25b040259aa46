"""Filtered search in the process: a filter keeping a small share of the items, before and
now, against numpy over the allowed rows.

``python -m bench.filtered --out DIR`` (or ``python -m bench --only filtered``) builds each
index type at its size from clustered 512-d unit vectors (keys 1..n), draws filters that
keep each share of the items (in random order, as SQL returns them), and times in rounds
that run every contender over the queries in turn:

- *before*: the search as it was, kept here as the baseline: ``np.isin`` over every label
  into a bitmap, then FAISS's exhaustive search with that bitmap as its selector;
- *now*: :meth:`VectorIndex.search` (selective filters: the keys looked up in the label
  map sorted by owner, only their rows scored);
- *numpy*: the allowed rows gathered from the matrix, ``@ q``, argpartition.

It also times the two ways of finding the allowed labels alone (the old ``np.isin`` and the
owner lookup), and checks that *now* returns numpy's ids. Writes ``filtered.md`` and
``filtered.json`` in DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.blas import blas_threads
from bench.config import BenchConfig
from bench.data import Mixture
from bench.machine import describe_machine
from index.spec import IndexSpec
from index.vector_index import (
    SEGMENT_BITS,
    SEGMENT_MASK,
    SELECTIVE_MAX,
    SELECTIVE_SHARE,
    IndexHit,
    VectorIndex,
    configure_faiss_threads,
)

DIM = 512
TOP_K = 10
SPECS = {
    "flat": IndexSpec(),
    "hnsw": IndexSpec(type="hnsw", m=32, ef_construction=80, ef_search=64),
    "ivf-sq8": IndexSpec(type="ivf", nprobe=16, quantizer="sq8"),
}


@dataclass
class FilteredConfig:
    """Which indexes at which sizes, which filter shares, how many queries."""

    builds: tuple[tuple[str, int], ...] = (
        ("flat", 1_000_000),
        ("hnsw", 100_000),
        ("ivf-sq8", 100_000),
    )
    shares: tuple[float, ...] = (0.001, 0.01, 0.1)
    queries: int = 50
    rounds: int = 3
    centres: int = 2000
    seed: int = 0


def quick_filtered() -> FilteredConfig:
    return FilteredConfig(
        builds=(("flat", 20_000), ("ivf-sq8", 20_000)), shares=(0.001, 0.1), queries=5, rounds=1
    )


def before(index: VectorIndex, q: np.ndarray, k: int, allowed: np.ndarray) -> list[IndexHit]:
    """The filtered search as it was: a bitmap by ``np.isin`` over every label, then FAISS
    (exhaustive over every vector for a selective filter)."""
    matrix = q.reshape(1, -1)
    with index._lock.read():
        labels = index._labels[: index._n]
        mask = np.isin(labels >> SEGMENT_BITS, np.asarray(allowed, dtype=np.int64))
        items = int(np.count_nonzero(mask & ((labels & SEGMENT_MASK) == 0)))
        total, bits = int(mask.sum()), np.packbits(mask, bitorder="little")
        want = min(k, items)
        if want <= 0:
            return []
        selective = total <= max(SELECTIVE_MAX, SELECTIVE_SHARE * index.vectors)
        return index._search(matrix, k, want, total, bits, exhaustive=selective, wait=True)


def _numpy(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = vectors[rows] @ q
    k = min(TOP_K, len(rows))
    top = np.argpartition(-scores, k - 1)[:k]
    return rows[top[np.argsort(-scores[top])]]


def _old_lookup(index: VectorIndex, allowed: np.ndarray) -> Any:
    return np.isin(index._labels[: index._n] >> SEGMENT_BITS, allowed)


def _timed(contenders: dict[str, Any], qs: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):  # each round runs every contender over the queries in turn
        for name, run in contenders.items():
            run(qs[0])
            for q in qs:
                t0 = time.perf_counter()
                run(q)
                times[name].append(time.perf_counter() - t0)
    return {
        name: {"p50_ms": 1e3 * float(np.median(t)), "mean_ms": 1e3 * float(np.mean(t))}
        for name, t in times.items()
    }


def measure(name: str, n: int, cfg: FilteredConfig, log: Any = print) -> list[dict[str, Any]]:
    """Every share's contenders on one index of ``n`` one-vector items."""
    mixture = Mixture(DIM, cfg.centres, seed=cfg.seed)
    vectors = mixture.sample(n, seed=cfg.seed + 1)
    qs = mixture.sample(cfg.queries, seed=cfg.seed + 2)
    keys = np.arange(1, n + 1, dtype=np.int64)
    t0 = time.perf_counter()
    index = VectorIndex(DIM, SPECS[name], deferred=True)
    for start in range(0, n, 100_000):
        index.upsert(keys[start : start + 100_000], vectors[start : start + 100_000])
    index.finish()
    log(f"filtered: {name} {n:,} built in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    index._rows_of(keys[:1])  # the owner-sorted label map, built once per renumbering
    lookup_build_ms = 1e3 * (time.perf_counter() - t0)
    rng = np.random.default_rng(cfg.seed + 3)
    out = []
    for share in cfg.shares:
        allowed = rng.choice(keys, max(1, int(share * n)), replace=False)
        rows = np.sort(allowed - 1)
        same = sum(
            [h.pk - 1 for h in index.search(q, TOP_K, allowed)] == _numpy(vectors, rows, q).tolist()
            for q in qs
        )
        with blas_threads(1):
            timed = _timed(
                {
                    "before": lambda q, a=allowed: before(index, q, TOP_K, a),
                    "now": lambda q, a=allowed: index.search(q, TOP_K, a),
                    "numpy": lambda q, r=rows: _numpy(vectors, r, q),
                    "labels: np.isin": lambda q, a=allowed: _old_lookup(index, a),
                    "labels: now": lambda q, a=allowed: index._rows_of(a),
                },
                qs,
                cfg.rounds,
            )
        row = {
            "type": name,
            "n": n,
            "share": share,
            "allowed": len(allowed),
            "selective": bool(index._selective(len(allowed))),
            "same_ids_as_numpy": f"{same}/{len(qs)}",
            "lookup_build_ms": lookup_build_ms,
            "ms": timed,
        }
        log(
            f"filtered: {name} {n:,} {share:.1%}: before {timed['before']['p50_ms']:.2f} ms, "
            f"now {timed['now']['p50_ms']:.2f} ms, numpy {timed['numpy']['p50_ms']:.2f} ms"
        )
        out.append(row)
    return out


def run(cfg: FilteredConfig, log: Any = print) -> dict[str, Any]:
    configure_faiss_threads(1)
    rows = [row for name, n in cfg.builds for row in measure(name, n, cfg, log)]
    return {"config": asdict(cfg), "rows": rows}


def run_filtered(bench: BenchConfig, work: Path, log: Any) -> dict[str, Any]:
    """The ``filtered`` phase of ``python -m bench``."""
    return run(quick_filtered() if bench.quick else FilteredConfig(), log)


def filtered_md(result: dict[str, Any]) -> list[str]:
    """The table: p50 per contender, and before / now."""
    lines = [
        "## Filtered search, in process",
        "",
        "512-d clustered unit vectors, one per item, k = 10, one thread; filters keep the "
        "share of the items given, drawn at random. *before*: `np.isin` over every label, "
        "then FAISS over every vector with a bitmap; *now*: the owner lookup and the allowed "
        "rows scored (selective), or the lookup's bitmap and FAISS (loose); *numpy*: the "
        "allowed rows gathered and scored (same ids: *now* against *numpy* over the float32 "
        "vectors; an IVF-SQ8 scores its codes). p50 ms; *labels*: finding the allowed labels "
        "alone (now: the owner lookup, or one `isin` pass past a sixteenth of the labels).",
        "",
        "| type | n | share | allowed | selective | before | now | numpy | before / now "
        "| labels: isin | labels: now | same ids as numpy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ms = {name: t["p50_ms"] for name, t in r["ms"].items()}
        lines.append(
            f"| {r['type']} | {r['n']:,} | {r['share']:.1%} | {r['allowed']:,} | "
            f"{'yes' if r['selective'] else 'no'} | {ms['before']:.2f} | {ms['now']:.2f} | "
            f"{ms['numpy']:.2f} | {ms['before'] / ms['now']:.1f}x | "
            f"{ms['labels: np.isin']:.2f} | {ms['labels: now']:.2f} | "
            f"{r['same_ids_as_numpy']} |"
        )
    builds = {f"{r['type']} {r['n']:,}": r["lookup_build_ms"] for r in result["rows"]}
    lines += [
        "",
        "Building the owner-sorted label map (once per load or renumbering): "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in builds.items())
        + ".",
        "",
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--builds", help="type:size pairs, e.g. flat:1000000,hnsw:100000")
    p.add_argument("--shares", help="e.g. 0.001,0.01,0.1")
    p.add_argument("--queries", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    cfg = FilteredConfig()
    if args.builds:
        pairs = [b.split(":") for b in args.builds.split(",")]
        cfg.builds = tuple((name, int(float(size))) for name, size in pairs)
    if args.shares:
        cfg.shares = tuple(float(s) for s in args.shares.split(","))
    cfg.queries = args.queries or cfg.queries
    cfg.rounds = args.rounds or cfg.rounds
    machine = describe_machine()
    result = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "filtered.json").write_text(json.dumps({"machine": machine, **result}, indent=1))
    head = [
        "# Filtered search, in process",
        "",
        f"{machine.get('cpu')} · {machine.get('date')} · commit {machine.get('commit')} · "
        "`python -m bench.filtered`"
        + (f" `--builds {args.builds}`" if args.builds else "")
        + (f" `--shares {args.shares}`" if args.shares else ""),
        "",
    ]
    text = "\n".join(head + filtered_md(result)[2:])
    (args.out / "filtered.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
