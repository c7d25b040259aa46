"""On-disk IVF: an SQ8 IVF whose lists are searched in the mapped snapshot file, at sizes
whose vectors do not fit in memory (10M x 512 float32 is 20 GB).

In process, through the service's VectorIndex and snapshot code (SQL and HTTP are out of
reach at 10M on the bench machine). One streaming pass over the generated vectors: each
chunk updates the exact top 10 of every query (the ground truth) and goes into the index,
so the vectors are never held whole. The baseline, measured in the same run, is the same
index with its lists in memory, right after the build; then the index is snapshotted
(written a list at a time), dropped, loaded from the file (its lists mapped, the file's
pages evicted from the page cache first: the first pass is a cold start) and searched
twice. RSS (anonymous and file-backed) is read from /proc/self/status at each step.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.data import TOP_K, Mixture
from index.snapshots import SnapshotHeader, read_snapshot, write_snapshot_chunks
from index.spec import IndexSpec
from index.vector_index import VectorIndex, configure_faiss_threads

Log = Callable[[str], None]
DIM = 512
CHUNK = 100_000


@dataclass(frozen=True)
class OndiskConfig:
    """The measured index: SQ8 lists, ``nlist`` of them (None: the service's choice for
    the size, capped at ``max_nlist``: assigning 10M vectors to 16,384 lists takes hours
    on 2 busy cores), ``nprobe`` scanned; ``also_nprobe``: the trade-off around it."""

    nprobe: int = 16
    nlist: int | None = None
    max_nlist: int = 1024
    also_nprobe: tuple[int, ...] = (8, 32, 64)  # the mapped index, warm, searched again so
    queries: int = 200
    centres: int = 2000
    seed: int = 0

    def spec(self, n: int) -> IndexSpec:
        lists = self.nlist or min(IndexSpec(type="ivf").lists_for(n), self.max_nlist)
        return IndexSpec(type="ivf", quantizer="sq8", nlist=lists, nprobe=self.nprobe, on_disk=True)


def run_ondisk(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Every size of ``cfg.sizes`` in turn (the bench's --sizes)."""
    ondisk = OndiskConfig(queries=min(cfg.queries, 200), centres=cfg.centres, seed=cfg.seed)
    rows = [measure(n, ondisk, work, log) for n in sorted(cfg.sizes)]
    return {"config": asdict(ondisk), "rows": rows}


def measure(n: int, cfg: OndiskConfig, work: Path, log: Log) -> dict[str, Any]:
    """Build, baseline search, snapshot, load mapped, search cold then warm: one row."""
    configure_faiss_threads(1)
    spec = cfg.spec(n)
    mixture = Mixture(DIM, cfg.centres, seed=cfg.seed)
    queries = mixture.sample(cfg.queries, seed=cfg.seed + 2)
    row: dict[str, Any] = {"n": n, "dim": DIM, "spec": spec.params(), "rss_start": rss()}
    index = VectorIndex(DIM, spec, deferred=True)
    truth = _TopK(len(queries))
    started = time.perf_counter()
    # The service trains on positions drawn from the whole collection; these vectors are
    # drawn independently, so the first ones are as good a sample and need no second pass.
    take = np.arange(len(index.training_sample(n)))
    sample: list[np.ndarray] = []
    waiting: list[tuple[int, np.ndarray]] = []
    sampling = True
    for start, chunk in _chunks(mixture, n, cfg.seed + 1):
        truth.update(queries @ chunk.T, start)
        if sampling:  # the sample's positions in this chunk, until it is complete
            inside = take[(take >= start) & (take < start + len(chunk))] - start
            sample.append(chunk[inside])
            waiting.append((start, chunk))
            if start + len(chunk) <= take[-1]:
                continue
            index.train_lists(np.concatenate(sample), n)  # too few: finish() trains
            sample, sampling = [], False
            log(f"ondisk {n}: trained {index.lists} lists in {time.perf_counter() - started:.0f} s")
        for at, rows in waiting or [(start, chunk)]:
            index.upsert(np.arange(at + 1, at + 1 + len(rows), dtype=np.int64), rows)
        waiting = []
        if (start // CHUNK) % 10 == 9:
            log(f"ondisk {n}: {start + len(chunk)} added, {time.perf_counter() - started:.0f} s")
    index.finish()
    row["build_s"] = time.perf_counter() - started
    row["rss_built"] = rss()
    best = truth.ids()
    log(f"ondisk {n}: built in {row['build_s']:.0f} s, {index.lists} lists")
    row["memory"] = _search(index, queries, best, "in memory")
    log(f"ondisk {n}: in memory {row['memory']}")

    path = work / f"ondisk-{n}.snapshot"
    started = time.perf_counter()
    header = SnapshotHeader(seq=1, dim=DIM)
    write_snapshot_chunks(path, header, index.write_chunks())
    row["snapshot_s"] = time.perf_counter() - started
    row["disk_bytes"] = path.stat().st_size
    del index
    gc.collect()
    _evict(path)
    row["rss_dropped"] = rss()
    started = time.perf_counter()
    snap = read_snapshot(path)
    assert snap is not None, f"the snapshot {path} did not read back: see the log above"
    mapped = VectorIndex.from_bytes(DIM, snap.payload, spec)
    row["load_s"] = time.perf_counter() - started
    assert mapped.mapped
    _evict(path)  # the checksum read every page: the searches start cold again
    row["rss_loaded"] = rss()
    row["cold"] = _search(mapped, queries, best, "mapped, cold")
    row["rss_cold"] = rss()
    row["warm"] = _search(mapped, queries, best, "mapped, warm")
    row["rss_warm"] = rss()
    row["nprobe"] = []
    for nprobe in cfg.also_nprobe:
        mapped.spec = replace(spec, nprobe=nprobe)
        row["nprobe"].append({"nprobe": nprobe, **_search(mapped, queries, best, "mapped")})
        log(f"ondisk {n}: nprobe {nprobe}: {row['nprobe'][-1]}")
    row["rss_end"] = rss()
    log(f"ondisk {n}: mapped cold {row['cold']}, warm {row['warm']}, rss {row['rss_warm']}")
    del mapped, snap
    gc.collect()
    path.unlink()
    return row


def _chunks(mixture: Mixture, n: int, seed: int) -> Any:
    start = 0
    for chunk in mixture.chunks(n, seed, size=CHUNK):
        yield start, chunk
        start += len(chunk)


class _TopK:
    """Each query's exact top 10 so far, over the chunks seen (ids are row numbers)."""

    def __init__(self, queries: int) -> None:
        self.scores = np.full((queries, TOP_K), -np.inf, dtype=np.float32)
        self.rows = np.full((queries, TOP_K), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, start: int) -> None:
        k = min(TOP_K, scores.shape[1])
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        both = np.hstack([self.scores, np.take_along_axis(scores, part, 1)])
        rows = np.hstack([self.rows, part + start])
        order = np.argsort(-both, axis=1, kind="stable")[:, :TOP_K]
        self.scores = np.take_along_axis(both, order, 1)
        self.rows = np.take_along_axis(rows, order, 1)

    def ids(self) -> np.ndarray:
        return self.rows


def _search(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, what: str) -> dict:
    """recall@10 (items are row + 1) and per-query latency, one query at a time."""
    times, hits = [], 0
    for i, q in enumerate(queries):
        started = time.perf_counter()
        found = index.search(q, TOP_K)
        times.append(time.perf_counter() - started)
        hits += len({h.pk - 1 for h in found} & set(truth[i].tolist()))
    ms = np.array(times) * 1000
    return {
        "what": what,
        "recall": hits / truth.size,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def rss() -> dict[str, int]:
    """This process's VmRSS, RssAnon and RssFile, in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
    return out


def _evict(path: Path) -> None:
    """Drop this file's pages from the page cache (only its own: the machine is shared)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
