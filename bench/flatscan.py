"""One query's exhaustive scan in the process, without HTTP: a flat index against numpy.

``python -m bench.flatscan --sizes 10000,100000 --out DIR`` times, in rounds that run every
contender over the queries in turn (so a busy machine's ups and downs fall on every
contender alike; OpenBLAS' threads spin after a call, so they are not mixed query by
query), numpy brute force
(``vectors @ q`` + argpartition, one BLAS thread and OpenBLAS' default), FAISS's float32
``IndexFlatIP`` (what a flat index scanned before its float16 copy) and the service's
flat :class:`VectorIndex`; it checks that the flat index returns numpy's exact ids.
Writes ``flatscan.md`` and ``flatscan.json`` in DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.blas import blas_threads
from bench.data import Mixture
from bench.machine import describe_machine
from index.vector_index import VectorIndex, configure_faiss_threads

TOP_K = 10
DIM = 512


def _numpy(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = vectors @ q
    top = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
    return top[np.argsort(-scores[top])]


def measure(n: int, queries: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    mixture = Mixture(DIM, 200, seed=seed)
    vectors = mixture.sample(n, seed=seed + 1)
    qs = mixture.sample(queries, seed=seed + 2)
    index = VectorIndex(DIM)
    index.upsert(np.arange(n, dtype=np.int64), vectors)
    flat32: Any = index._index  # the float32 FAISS index the flat index keeps
    faiss.omp_set_num_threads(1)

    contenders: dict[str, tuple[int | None, Any]] = {  # (BLAS threads, one search)
        "numpy, 1 BLAS thread": (1, lambda q: _numpy(vectors, q)),
        "numpy, default BLAS threads": (None, lambda q: _numpy(vectors, q)),
        "FAISS IndexFlatIP float32 (before)": (1, lambda q: flat32.search(q[None], TOP_K)),
        "flat VectorIndex (float16 scan + float32 rescoring)": (
            1,
            lambda q: index.search(q, TOP_K),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    exact = 0
    for q in qs:  # checked once, outside the timing
        exact += [h.pk for h in index.search(q, TOP_K)] == _numpy(vectors, q).tolist()
    for _ in range(rounds):  # each round runs every contender over the queries in turn
        for name, (threads, run) in contenders.items():
            with blas_threads(threads):
                run(qs[0])
                for q in qs:
                    t0 = time.perf_counter()
                    run(q)
                    times[name].append(time.perf_counter() - t0)
    rows = {
        name: {
            "p50_ms": 1e3 * float(np.median(t)),
            "mean_ms": 1e3 * float(np.mean(t)),
            "min_ms": 1e3 * float(np.min(t)),
        }
        for name, t in times.items()
    }
    best_numpy = min(
        rows["numpy, 1 BLAS thread"]["mean_ms"], rows["numpy, default BLAS threads"]["mean_ms"]
    )
    for row in rows.values():
        row["x_numpy"] = best_numpy / row["mean_ms"]
    return {
        "n": n,
        "queries": queries * rounds,
        "same_ids_as_numpy": f"{exact}/{queries}",
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    configure_faiss_threads(1)
    machine = describe_machine()
    sizes = [measure(int(s), args.queries, args.rounds) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flatscan.json").write_text(
        json.dumps({"machine": machine, "sizes": sizes}, indent=1)
    )
    lines = [
        "# One query's exhaustive scan, in process",
        "",
        f"{machine.get('cpu')} · {machine.get('date')} · commit {machine.get('commit')} · "
        f"`python -m bench.flatscan --sizes {args.sizes} --queries {args.queries} "
        f"--rounds {args.rounds}`",
        "",
        "512-d clustered unit vectors, k = 10, contenders timed in rounds, each over every "
        "query in turn. "
        "x numpy = the better numpy mean over the contender's mean.",
        "",
        "| n | contender | p50 ms | mean ms | min ms | x numpy | same ids as numpy |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for name, r in size["rows"].items():
            same = size["same_ids_as_numpy"] if name.startswith("flat") else "-"
            lines.append(
                f"| {size['n']:,} | {name} | {r['p50_ms']:.2f} | {r['mean_ms']:.2f} | "
                f"{r['min_ms']:.2f} | {r['x_numpy']:.2f} | {same} |"
            )
    text = "\n".join(lines) + "\n"
    (args.out / "flatscan.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
