"""Several server processes on one database (invariant 8, docs/replicas.md).

Lag: writers post text items through server A at a steady rate while a prober on server B,
another process on the same data dir and SQLite file, searches for every acknowledged item
until B's index answers with it; a prober on A measures the same for A's own writes (the
baseline: a probe's round trip). Throughput: vector searches from concurrent clients against
one ``mmr serve`` and against ``mmr serve --workers N`` on one collection. Nothing timed is
asserted.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.clients import RawHttp, closed_loop, latency_summary
from bench.config import BenchConfig, ReplicasConfig
from bench.data import TOP_K, Mixture
from bench.loader import load_vectors
from bench.server import Server, ServerError

Log = Callable[[str], None]
NAME = "replicas"
ITEMS = f"/v1/collections/{NAME}/items"
SEARCH = f"/v1/collections/{NAME}/search"
TAG = "lag_id"  # the metadata key a prober filters on: one search asks for many items
MAX_ASKED = 1000  # the API's bound on a filter's values and on k
QUERIES = 200  # distinct search vectors the throughput clients cycle through
LOAD_TRIES = 3  # runs of the search load until every process holds connections


def run_replicas(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """The lag between two processes, then the search throughput of 1 and N processes."""
    from app.settings import Settings

    interval = Settings.model_fields["follow_interval_s"].default
    return {
        "model": cfg.replicas.model,
        "database": "SQLite (WAL), one file in the shared data dir",
        "follow_interval_s": interval,
        "lag": measure_lag(cfg, work, log),
        "lag_postgres": measure_lag_on_postgres(cfg, work, log),
        "throughput": measure_throughput(cfg, work, log),
    }


def measure_lag_on_postgres(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """The same lag with both processes on Postgres, where a commit's notification wakes the
    followers (index/wakeup.py), in a schema of its own dropped afterwards; ``skipped``
    with the reason when the server at ``cfg.replicas.postgres_url`` does not answer."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    url = cfg.replicas.postgres_url
    schema = f"bench_replicas_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        log(f"replicas: no lag on Postgres ({url} does not answer)")
        return {"skipped": f"Postgres at {url} does not answer: {type(exc).__name__}"}
    try:
        env = {"MMR_DATABASE_URL": f"{url}?options=-csearch_path%3D{schema}"}
        return measure_lag(cfg, work, log, env=env, label="Postgres")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _server(
    cfg: BenchConfig, data_dir: Path, workers: int = 1, env: dict[str, str] | None = None
) -> Server:
    # Writes embed texts with a cheap model; searches by vector run no model at all.
    return Server(
        data_dir,
        model=cfg.replicas.model,
        precision="fp32",
        ready_timeout_s=cfg.ready_timeout_s,
        workers=workers,
        env=env,
    )


@dataclass
class Written:
    """An acknowledged item and when each server's index first answered with it."""

    item_id: str
    acked: float
    found: dict[str, float] = field(default_factory=dict)


class Ledger:
    """Every acknowledged item, and per server the ones its index has not answered with yet."""

    def __init__(self, servers: list[str], missed_after_s: float) -> None:
        self.items: list[Written] = []
        self.waiting: dict[str, dict[str, Written]] = {s: {} for s in servers}
        self.missed_after_s = missed_after_s
        self.errors: dict[str, int] = {s: 0 for s in ["writes", *servers]}
        self._lock = threading.Lock()

    def acked(self, item_id: str, at: float) -> None:
        with self._lock:
            written = Written(item_id, at)
            self.items.append(written)
            for waiting in self.waiting.values():
                waiting[item_id] = written

    def failed(self, who: str) -> None:
        with self._lock:
            self.errors[who] += 1

    def to_ask(self, server: str) -> list[str]:
        """The oldest items the server has not answered with; those waited on past
        ``missed_after_s`` are given up (counted as missed)."""
        now = time.perf_counter()
        with self._lock:
            waiting = self.waiting[server]
            for item_id in [i for i, w in waiting.items() if now - w.acked > self.missed_after_s]:
                del waiting[item_id]
            return list(waiting)[:MAX_ASKED]

    def found(self, server: str, item_ids: list[str], at: float) -> None:
        with self._lock:
            for item_id in item_ids:
                written = self.waiting[server].pop(item_id, None)
                if written is not None:
                    written.found[server] = at

    def summary(self, server: str) -> dict[str, Any]:
        """Lag from acknowledgement to found, ms; items never found within the bound."""
        with self._lock:
            lags = [w.found[server] - w.acked for w in self.items if server in w.found]
        return {
            "items": len(self.items),
            "found": len(lags),
            "missed": len(self.items) - len(lags),
            "probe_errors": self.errors[server],
            **latency_summary(lags),
            "max_ms": max(lags) * 1000.0 if lags else None,
        }


def measure_lag(
    cfg: BenchConfig,
    work: Path,
    log: Log,
    *,
    env: dict[str, str] | None = None,
    label: str = "SQLite",
) -> dict[str, Any]:
    """Writers on A; a prober on B (the lag) and one on A (the read-your-writes baseline)."""
    r = cfg.replicas
    data_dir = Path(tempfile.mkdtemp(prefix="replicas-lag-", dir=work)) / "data"
    with _server(cfg, data_dir, env=env) as a, _server(cfg, data_dir, env=env) as b:
        created = httpx.post(f"{a.url}/v1/collections", json={"name": NAME}, timeout=60)
        created.raise_for_status()
        query = _unit_query(int(created.json()["dim"]))
        for srv in (a, b):  # both have the collection loaded before the first write
            _until_searchable(srv, query, cfg.ready_timeout_s)
        ledger = Ledger(["a", "b"], r.missed_after_s)
        seconds = _write_and_probe(r, a.url, {"a": a.url, "b": b.url}, ledger, query)
    other, same = ledger.summary("b"), ledger.summary("a")
    log(
        f"replicas ({label}): {len(ledger.items)} items in {seconds:.1f} s; lag on B p50 "
        f"{_ms(other['p50_ms'])} p99 {_ms(other['p99_ms'])} ms ({other['missed']} missed), "
        f"on A p50 {_ms(same['p50_ms'])} ms"
    )
    return {
        "writers": r.writers,
        "write_rate": r.write_rate,
        "seconds": seconds,
        "written_per_s": len(ledger.items) / seconds if seconds else 0.0,
        "write_errors": ledger.errors["writes"],
        "probe_interval_s": r.probe_interval_s,
        "missed_after_s": r.missed_after_s,
        "other": other,
        "same": same,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _unit_query(dim: int) -> list[float]:
    """Any vector does: the filter, not the score, picks what a probe gets back."""
    return [1.0] + [0.0] * (dim - 1)


def _until_searchable(srv: Server, query: list[float], timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    body = {"vector": query, "k": 1}
    while httpx.post(f"{srv.url}{SEARCH}", json=body, timeout=60).status_code != 200:
        if time.perf_counter() > deadline:
            raise ServerError(f"{srv.url} does not search {NAME!r}:\n{srv.log_tail()}")
        time.sleep(0.05)


def _write_and_probe(
    r: ReplicasConfig, writer_url: str, probed: dict[str, str], ledger: Ledger, query: list[float]
) -> float:
    """Writers for ``lag_duration_s``, probers until every item is found or given up."""
    done = threading.Event()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(r.writers + len(probed)) as pool:
        probes = [
            pool.submit(_probe, url, name, ledger, query, done, r.probe_interval_s)
            for name, url in probed.items()
        ]
        writes = [pool.submit(_write, writer_url, w, ledger, r, t0) for w in range(r.writers)]
        for future in writes:
            future.result()
        seconds = time.perf_counter() - t0
        done.set()
        for future in probes:
            future.result()
    return seconds


def _write(url: str, writer: int, ledger: Ledger, r: ReplicasConfig, t0: float) -> None:
    """Items at ``write_rate / writers`` per second, each acknowledged before the next."""
    period = r.writers / r.write_rate
    due = t0 + writer / r.write_rate  # the writers take turns, evenly spread
    raw = RawHttp(url)
    try:
        n = 0
        while due < t0 + r.lag_duration_s:
            time.sleep(max(0.0, due - time.perf_counter()))
            item_id = f"w{writer}-{n}"
            body = {"id": item_id, "text": f"replica note {item_id}", "metadata": {TAG: item_id}}
            try:
                status, _ = raw.post_json(ITEMS, json.dumps(body).encode())
            except (OSError, http.client.HTTPException):
                status = 0
            if status in (200, 201):
                ledger.acked(item_id, time.perf_counter())
            else:
                ledger.failed("writes")
            n += 1
            due += period
    finally:
        raw.close()


def _probe(
    url: str,
    server: str,
    ledger: Ledger,
    query: list[float],
    done: threading.Event,
    interval_s: float,
) -> None:
    """One search asks for every item the server has not answered with yet (a metadata
    filter on their ids: SQL narrows the candidates, the index answers with those it
    holds). An item counts as found when the search that returned it completes."""
    raw = RawHttp(url)
    try:
        while True:
            asked = ledger.to_ask(server)
            if not asked and done.is_set():
                return
            if asked:
                body = {"vector": query, "k": len(asked), "filter": {TAG: asked}}
                try:
                    status, data = raw.post_json(SEARCH, json.dumps(body).encode())
                except (OSError, http.client.HTTPException):
                    status, data = 0, b""
                at = time.perf_counter()
                if status == 200:
                    hits = json.loads(data)["results"]
                    ledger.found(server, [hit["item"]["id"] for hit in hits], at)
                else:
                    ledger.failed(server)
            time.sleep(interval_s)
    finally:
        raw.close()


def measure_throughput(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """One collection of random vectors (flat); the same clients against 1 and N processes."""
    r = cfg.replicas
    data_dir = Path(tempfile.mkdtemp(prefix="replicas-qps-", dir=work)) / "data"
    with _server(cfg, data_dir) as srv:
        body = {"name": NAME, "index": {"type": "flat"}}
        created = httpx.post(f"{srv.url}/v1/collections", json=body, timeout=60)
        created.raise_for_status()
        dim = int(created.json()["dim"])
    mixture = Mixture(dim, r.centres, seed=cfg.seed)
    load_vectors(data_dir, NAME, [mixture.sample(r.vectors, seed=cfg.seed + 1)])
    queries = mixture.sample(QUERIES, seed=cfg.seed + 2)
    bodies = [json.dumps({"vector": q.tolist(), "k": TOP_K}).encode() for q in queries]
    rows = []
    for workers in (1, r.workers):
        with _server(cfg, data_dir, workers=workers) as srv:
            _until_every_worker_serves(srv, cfg.ready_timeout_s)
            row = _search_load(srv, bodies, r)
        log(
            f"replicas: {workers} process(es): {row['qps']:.0f} q/s with {r.clients} clients, "
            f"connections per process {row['connections']}"
        )
        rows.append(row)
    ratio = rows[1]["qps"] / rows[0]["qps"] if rows[0]["qps"] else None
    out = {"n": r.vectors, "dim": dim, "k": TOP_K, "clients": r.clients}
    return {**out, "rows": rows, "ratio": ratio}


def _until_every_worker_serves(srv: Server, timeout_s: float) -> None:
    """Fresh connections until each worker has accepted one: a worker still starting
    accepts none, and keep-alive clients would stay with the others for the whole run."""
    deadline = time.perf_counter() + timeout_s
    held: list[RawHttp] = []
    try:
        while True:
            pids = srv.worker_pids()
            if len(pids) == srv.workers:
                raw = RawHttp(srv.url)
                held.append(raw)
                raw.get("/readyz")
                if all(srv.connections().values()):
                    return
            if time.perf_counter() > deadline:
                raise ServerError(f"not every worker serves:\n{srv.log_tail()}")
            if len(held) >= 32:  # let the kernel hand the next ones out afresh
                for raw in held:
                    raw.close()
                held.clear()
            time.sleep(0.05)
    finally:
        for raw in held:
            raw.close()


class VectorSearches:
    """Closed-loop search clients: each thread its own :class:`RawHttp`, bodies made once."""

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        self.url, self.bodies = url, bodies
        self._local = threading.local()
        self._opened: list[RawHttp] = []

    def search(self, _client: httpx.Client, n: int) -> bool:
        raw = getattr(self._local, "raw", None)
        if raw is None:
            raw = self._local.raw = RawHttp(self.url)
            self._opened.append(raw)
        status, _ = raw.post_json(SEARCH, self.bodies[n % len(self.bodies)])
        return status == 200

    def close(self) -> None:
        for raw in self._opened:
            raw.close()


def _search_load(srv: Server, bodies: list[bytes], r: ReplicasConfig) -> dict[str, Any]:
    """``clients`` connections for warm-up + duration (wrk where installed, else threads
    of this process); CPU of the servers and of the load generator over the measured time,
    and how the connections were spread over the processes."""
    pids = srv.worker_pids()
    for attempt in range(LOAD_TRIES):
        with ThreadPoolExecutor(1) as pool:
            if wrk.available():
                running = pool.submit(_wrk_load, srv, pids, bodies, r)
                time.sleep(0.5 + r.warmup_s + r.duration_s / 2)
            else:
                running = pool.submit(_thread_load, srv, pids, bodies, r)
                time.sleep(0.2 + r.warmup_s + r.duration_s / 2)
            connections = srv.connections()
            summary, server_cpu, client_cpu, wall = running.result()
        # A burst of connections can all be accepted by one process (its accept loop takes
        # them before another wakes): that run measured one process, so it goes again.
        if all(connections.values()) or attempt == LOAD_TRIES - 1:
            break
    return {
        "processes": srv.workers,
        "argv": "mmr serve" + (f" --workers {srv.workers}" if srv.workers > 1 else ""),
        "qps": summary["per_s"],
        **summary,
        "connections": sorted(connections.values(), reverse=True),
        "server_cores": server_cpu / wall,
        "client_cores": client_cpu / wall,
    }


Load = tuple[dict[str, Any], float, float, float]  # summary, server and client CPU s, wall s


def _wrk_load(srv: Server, pids: list[int], bodies: list[bytes], r: ReplicasConfig) -> Load:
    load = functools.partial(wrk.post_load, srv.url, SEARCH, bodies, connections=r.clients)
    load(duration_s=r.warmup_s)  # unmeasured
    cpu0, t0 = _cpu_s(pids), time.perf_counter()
    summary = load(duration_s=r.duration_s)
    wall = time.perf_counter() - t0
    return summary, _cpu_s(pids) - cpu0, summary["generator_cpu_s"], wall


def _thread_load(srv: Server, pids: list[int], bodies: list[bytes], r: ReplicasConfig) -> Load:
    searches = VectorSearches(srv.url, bodies)
    cpu0, own0, t0 = _cpu_s(pids), time.process_time(), time.perf_counter()
    result = closed_loop(
        srv.url,
        searches.search,
        clients=r.clients,
        warmup_s=r.warmup_s,
        duration_s=r.duration_s,
    )
    wall = time.perf_counter() - t0
    server_cpu, own_cpu = _cpu_s(pids) - cpu0, time.process_time() - own0
    searches.close()
    return {**result.summary(), "generator": "python threads"}, server_cpu, own_cpu, wall


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick
