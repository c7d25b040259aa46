"""Search: per collection size and index type, latency/QPS over HTTP, recall@10 against the
exact answer, build time and memory; numpy brute force measured in the same run."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.blas import blas_threads
from bench.clients import RawHttp, closed_loop, latency_summary, sequential
from bench.config import INDEX_TYPES, BenchConfig
from bench.data import TOP_K, Mixture, exact_top_k, recall_at_k
from bench.loader import load_vectors, served
from bench.server import Server

Log = Callable[[str], None]
NAME = "bench"
TERMINAL = {"succeeded", "failed", "cancelled"}


def run_search(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Every size in turn; the index types of one size share one loaded collection."""
    out: dict[str, Any] = {"model": cfg.search_model, "k": TOP_K, "sizes": []}
    builds: dict[str, list[tuple[int, float]]] = {}
    mixture: Mixture | None = None
    for n in sorted(cfg.sizes):
        data_dir = Path(tempfile.mkdtemp(prefix=f"search-{n}-", dir=work)) / "data"
        empty = _create_empty(cfg, data_dir)
        if mixture is None:
            mixture = Mixture(empty["dim"], cfg.centres, seed=cfg.seed)
            out["dim"] = empty["dim"]
        size = _one_size(cfg, n, mixture, data_dir, empty, builds, log)
        out["sizes"].append(size)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return out


def _search_server(cfg: BenchConfig) -> dict[str, Any]:
    # Searches send raw vectors: no encoder runs, so fp32 spares each start the int8 probe.
    return {"model": cfg.search_model, "precision": "fp32", "ready_timeout_s": cfg.ready_timeout_s}


def _create_empty(cfg: BenchConfig, data_dir: Path) -> dict[str, Any]:
    """The collection through the API on an empty server; its memory is the baseline."""
    with Server(data_dir, **_search_server(cfg)) as srv:
        rss = srv.rss_kb()
        with srv.client() as c:
            # Explicitly flat: start-up builds it (the column says so), and an auto collection
            # would queue a reindex of its own beside the ones each type measured asks for.
            r = c.post("/v1/collections", json={"name": NAME, "index": {"type": "flat"}})
            r.raise_for_status()
            created = r.json()
    return {"dim": int(created["dim"]), "rss_empty_kb": rss}


def _one_size(
    cfg: BenchConfig,
    n: int,
    mixture: Mixture,
    data_dir: Path,
    empty: dict[str, Any],
    builds: dict[str, list[tuple[int, float]]],
    log: Log,
) -> dict[str, Any]:
    # As the collection serves them (float16 features, normalised): the exact answers too.
    vectors = served(mixture.sample(n, seed=cfg.seed + 1))
    queries = mixture.sample(cfg.queries, seed=cfg.seed + 2)
    warmups = mixture.sample(cfg.search_warmup, seed=cfg.seed + 3)
    truth = exact_top_k(vectors, queries)
    numpy = numpy_baseline(vectors, queries, truth, cfg.search_budget_s)
    log(
        f"search n={n}: numpy {numpy['qps']:.1f} q/s, p50 {numpy['p50_ms']:.2f} ms "
        f"({numpy['blas_threads']} BLAS threads)"
    )
    loaded = load_vectors(data_dir, NAME, np.array_split(vectors, max(1, n // 100_000)))
    log(f"search n={n}: loaded {loaded['items']} rows into SQL in {loaded['seconds']:.1f} s")
    size: dict[str, Any] = {
        "n": n,
        "centres": cfg.centres,
        "queries": len(queries),
        "numpy": numpy,
        "sql_load_s": loaded["seconds"],
        "rss_empty_kb": empty["rss_empty_kb"],
        "types": [],
    }
    with Server(data_dir, **_search_server(cfg)) as srv:
        size["startup_s"] = srv.startup_s  # includes the flat build from SQL
        size["rss_loaded_kb"] = srv.rss_kb()
        with srv.client() as client:
            size["healthz_p50_ms"] = _http_floor(client, srv.url)
            probe = Probe(srv, client, queries, truth, vectors, cfg, warmups)
            for name in cfg.types:
                row = _one_type(probe, name, n, builds, cfg, log)
                row["bytes_per_vector"] = _per_vector(row.get("rss_kb"), empty["rss_empty_kb"], n)
                size["types"].append(row)
    return size


def _http_floor(client: httpx.Client, url: str, count: int = 200) -> float | None:
    """p50 of GET /healthz through FastAPI's whole stack, sent like the searches (by
    :class:`RawHttp`): what HTTP, the framework and this client cost before any search."""
    raw = RawHttp(url)
    try:
        res = sequential(
            client, lambda _c, _n: raw.get("/healthz")[0] == 200, count=count, budget_s=5.0
        )
    finally:
        raw.close()
    return latency_summary(res.latencies_s)["p50_ms"]


def numpy_baseline(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, budget_s: float
) -> dict[str, Any]:
    """Brute force, one query at a time: ``vectors @ q`` + argpartition; the better of
    OpenBLAS' default thread count and one thread (half the budget each)."""
    runs = []
    for threads in (None, 1):
        with blas_threads(threads) as used:
            run = _numpy_run(vectors, queries, truth, budget_s / 2)
        runs.append({**run, "blas_threads": used})
    best = max(runs, key=lambda r: r["qps"])
    return {**best, "runs": runs}


def _numpy_run(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, budget_s: float
) -> dict[str, Any]:
    latencies, found = [], []
    t_start = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
        top = top[np.argsort(-scores[top])]
        latencies.append(time.perf_counter() - t0)
        found.append(top.tolist())
        if len(latencies) >= 5 and time.perf_counter() - t_start > budget_s:
            break
    elapsed = time.perf_counter() - t_start
    return {
        "queries": len(latencies),
        "qps": len(latencies) / elapsed,
        "recall_at_10": recall_at_k(found, truth, vectors, queries),
        **latency_summary(latencies),
    }


class Probe:
    """What measuring one index type needs: the server, a client and the query set."""

    def __init__(
        self,
        srv: Server,
        client: httpx.Client,
        queries: np.ndarray,
        truth: np.ndarray,
        vectors: np.ndarray,
        cfg: BenchConfig,
        warmups: np.ndarray,
    ) -> None:
        self.srv, self.client, self.cfg = srv, client, cfg
        self.queries, self.truth, self.vectors = queries, truth, vectors
        # Bodies encoded once: the client's JSON work stays out of the latency.
        self.bodies = [_body(q) for q in queries]
        # Other queries warm the server up, so the measured ones find no row read before.
        self.warmups = [_body(q) for q in warmups]
        self.found: dict[int, list[int]] = {}
        self._local = threading.local()

    def search(self, client: httpx.Client, n: int) -> bool:
        """One search (query n modulo the set); remembers the ids it got. Sent by this
        thread's :class:`RawHttp` (httpx's own cost per request was a third of a search)."""
        i = n % len(self.bodies)
        raw = getattr(self._local, "raw", None)
        if raw is None:
            raw = self._local.raw = RawHttp(self.srv.url)
        status, data = raw.post_json(f"/v1/collections/{NAME}/search", self.bodies[i])
        if status != 200:
            return False
        self.found[i] = [int(hit["item"]["id"]) for hit in json.loads(data)["results"]]
        return True

    def warm_up(self) -> None:
        """Send the warm-up queries (answers unchecked, nothing timed)."""
        raw = RawHttp(self.srv.url)
        try:
            for body in self.warmups:
                raw.post_json(f"/v1/collections/{NAME}/search", body)
        finally:
            raw.close()

    def snapshot_mtime(self) -> float:
        """Newest index snapshot write in the data dir (0 when none)."""
        files = list((self.srv.data_dir / "indexes").glob("*.faiss"))
        return max((f.stat().st_mtime for f in files), default=0.0)


def _body(query: np.ndarray) -> bytes:
    return json.dumps({"vector": query.tolist(), "k": TOP_K}).encode()


def _one_type(
    probe: Probe,
    name: str,
    n: int,
    builds: dict[str, list[tuple[int, float]]],
    cfg: BenchConfig,
    log: Log,
) -> dict[str, Any]:
    params = dict(INDEX_TYPES.get(name) or {"type": name})
    row: dict[str, Any] = {"type": name, "params": params, "status": "ok", "reason": None}
    estimate = _estimate_build_s(builds.get(name, []), n)
    if estimate is not None and estimate > cfg.max_build_min * 60:
        return _skip(row, f"est. {estimate / 60:.0f} min build (> {cfg.max_build_min:g})", log, n)
    built = _reindex(probe.client, params, cfg)
    row.update(built)
    if built.get("reason"):
        return _skip(row, built["reason"], log, n, status=built.get("status", "skipped"))
    t0 = time.perf_counter()
    probe.search(probe.client, 0)  # the first search serves from the new index
    row["first_search_ms"] = (time.perf_counter() - t0) * 1000
    info = probe.client.get(f"/v1/collections/{NAME}").json()
    row["info"] = info
    served = str(info.get("index", {}).get("type", "?"))
    if params["type"] == "auto":  # the server chose: what it serves is recorded, not checked
        served = str(info.get("index_type", "?"))
        row["served"] = {"type": info["index"]["type"], **info["index"].get("params", {})}
    if served != params["type"]:
        return _skip(row, f"server serves a {served!r} index, not {params['type']!r}", log, n)
    builds.setdefault(name, []).append((n, row["build_s"]))
    _measure(probe, row, cfg)
    log(
        f"search n={n} {name}: build {row['build_s']:.1f} s, p50 {row['p50_ms']:.2f} ms, "
        f"{row['qps']:.0f} q/s, recall@10 {row['recall_at_10']:.3f}"
    )
    return row


def _skip(
    row: dict[str, Any], reason: str, log: Log, n: int, status: str = "skipped"
) -> dict[str, Any]:
    row.update(status=status, reason=reason)
    log(f"search n={n} {row['type']}: {status}: {reason}")
    return row


def _measure(probe: Probe, row: dict[str, Any], cfg: BenchConfig) -> None:
    probe.warm_up()
    probe.found.clear()  # the first search after the build, or the previous type's
    snap_before = probe.snapshot_mtime()
    seq = sequential(
        probe.client, probe.search, count=len(probe.bodies), budget_s=cfg.search_budget_s
    )
    found = [probe.found[i] for i in sorted(probe.found)]
    row.update(latency_summary(seq.latencies_s))
    row.update(
        queries=seq.ok,
        errors=seq.errors,
        qps=seq.ok / seq.duration_s if seq.duration_s else 0.0,
        recall_at_10=recall_at_k(
            found,
            probe.truth[sorted(probe.found)],
            probe.vectors,
            probe.queries[sorted(probe.found)],
        ),
    )
    row["qps_clients"] = {}
    for clients in cfg.search_clients:
        if clients > 1:
            res = closed_loop(
                probe.srv.url,
                probe.search,
                clients=clients,
                warmup_s=min(1.0, cfg.search_budget_s / 10),
                duration_s=min(15.0, cfg.search_budget_s / 4),
            )
            row["qps_clients"][str(clients)] = res.per_s
    row["snapshot_during_measurement"] = probe.snapshot_mtime() != snap_before
    row["rss_kb"] = probe.srv.rss_kb()


def _reindex(client: httpx.Client, params: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    """Rebuild the collection's index with these settings through a reindex job."""
    body: dict[str, Any] = {"type": "reindex", "collection": NAME, "index": params}
    note = None
    t0 = time.perf_counter()
    r = client.post("/v1/jobs", json=body)
    if r.status_code == 422 and params == {"type": "flat"}:
        # A server without index settings on reindex: flat is what it builds anyway.
        r = client.post("/v1/jobs", json={"type": "reindex", "collection": NAME})
        note = "the server took no index settings on reindex (flat is its only type)"
    if r.status_code != 202:
        return {"reason": f"server refused the settings: {r.status_code} {_message(r)}"}
    job = r.json()
    deadline = t0 + cfg.max_build_min * 60 * 2 + 60
    while job["status"] not in TERMINAL and time.perf_counter() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"job_id": job["id"], "job_status": job["status"], "note": note}
    if job["status"] != "succeeded":
        out.update(status="failed", reason=f"reindex job {job['status']}: {job.get('error')}")
        return out
    out["job_s"] = _job_seconds(job)
    out["build_s"] = out["job_s"] if out["job_s"] is not None else wall
    out["build_wall_s"] = wall
    return out


def _job_seconds(job: dict[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(job["started_at"])
        end = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


def _estimate_build_s(measured: list[tuple[int, float]], n: int) -> float | None:
    """Extrapolate the largest measured build to n as n log n (conservative for IVF)."""
    if not measured:
        return None
    n0, t0 = max(measured)
    if n0 >= n or n0 < 2:
        return None
    return t0 * (n / n0) * (math.log(n) / math.log(n0))


def _per_vector(rss_kb: int | None, empty_kb: int, n: int) -> float | None:
    if not rss_kb or not n:
        return None
    return (rss_kb - empty_kb) * 1024 / n
