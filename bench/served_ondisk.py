"""An on_disk collection served end to end (issue 26, "ten million on one 24 GB machine"):
rows in SQLite as the store writes them (bench.loader, below HTTP: ingesting 10M items over
HTTP takes days here), then ``mmr serve`` starting on them. Start-up builds the index from
SQL in a child process (index.builds: from 50,000 vectors) that writes the snapshot file the
server maps; the server's and the child's memory are sampled every second meanwhile. Then
searches over HTTP, one at a time: recall@10 against the exact top 10 (computed while the
vectors were generated, never all held at once) and latency, the file's pages evicted first
(cold), then again (warm). The baseline for memory is the same server started empty, in the
same run; for latency, ``GET /healthz`` (the HTTP floor).

    python -m bench.served_ondisk --n 10000000 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import BenchConfig
from bench.data import TOP_K, Mixture
from bench.loader import load_vectors
from bench.ondisk import _evict, _TopK
from bench.search import _search_server
from bench.server import Server

DIM = 512
NAME = "big"
CHUNK = 100_000


def status_mib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of a process, MiB ({} once it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
    except OSError:
        return {}
    return out


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Sampler:
    """Peak memory of a process and of its children (the build's), sampled every second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server: dict[str, int] = {}
        self.child: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            _peak(self.server, status_mib(self.pid))
            for c in children(self.pid):
                _peak(self.child, status_mib(c))

    def done(self) -> None:
        self.stop.set()
        self.thread.join()


def _peak(into: dict[str, int], now: dict[str, int]) -> None:
    for k, v in now.items():
        into[k] = max(into.get(k, 0), v)


def run(n: int, work: Path, queries: int, log: Any = print, reuse: bool = False) -> dict[str, Any]:
    """``reuse``: ``work`` holds the loaded rows of an earlier run of the same ``n``
    (the vectors are generated again for the exact answers, not loaded)."""
    data_dir = work / "data"
    mixture = Mixture(DIM, 2000, seed=0)
    q = mixture.sample(queries, seed=2)
    truth = _TopK(len(q))
    out: dict[str, Any] = {"n": n, "dim": DIM, "queries": queries}
    spec = {"type": "ivf", "quantizer": "sq8", "nlist": 1024, "nprobe": 16, "on_disk": True}
    out["index"] = spec
    server = _search_server(BenchConfig())  # random:ViT-B-32: 512-d, fp32
    if reuse:  # an empty server's memory: a data dir of its own
        with Server(work / "empty", **server) as srv:
            out["empty"] = status_mib(srv.pid)
    else:
        with Server(data_dir, **server) as srv, srv.client() as c:
            out["empty"] = status_mib(srv.pid)
            # The collection's dimension must be the vectors': a model of 512 dims.
            made = c.post("/v1/collections", json={"name": NAME, "index": spec})
            made.raise_for_status()
            if made.json()["dim"] != DIM:
                raise RuntimeError(f"the bench model makes {made.json()['dim']}-d vectors")

    def chunks() -> Any:
        start = 0
        for chunk in mixture.chunks(n, seed=1, size=CHUNK):
            truth.update(q @ chunk.T, start)
            start += len(chunk)
            if (start // CHUNK) % 10 == 0:
                log(f"loaded {start}")
            yield chunk

    if reuse:
        for _ in chunks():
            pass
        loaded = {"seconds": None}
    else:
        loaded = load_vectors(data_dir, NAME, chunks())
    out["load_s"] = loaded["seconds"]
    out["sqlite_bytes"] = sum(p.stat().st_size for p in data_dir.glob("mmr.sqlite3*"))
    log(f"loaded {n} rows ({loaded['seconds']} s), {out['sqlite_bytes'] / 2**30:.2f} GiB")
    best = truth.ids()
    srv = Server(data_dir, **{**server, "ready_timeout_s": 4 * 3600})
    t0 = time.perf_counter()
    sampler: Sampler | None = None
    started = threading.Event()

    def watch() -> None:  # the server's pid exists once Popen returns, before it is ready
        nonlocal sampler
        while srv.proc is None:
            time.sleep(0.05)
        sampler = Sampler(srv.proc.pid)
        started.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with srv, srv.client() as c:
        started.wait()
        assert sampler is not None
        sampler.done()
        out["start_s"] = time.perf_counter() - t0
        out["server_peak"], out["child_peak"] = sampler.server, sampler.child
        out["ready"] = status_mib(srv.pid)
        index = c.get(f"/v1/collections/{NAME}").json()["index"]
        out["index_bytes"] = index["bytes"]
        out["described"] = index
        log(f"ready in {out['start_s']:.0f} s: {out['ready']}, child peak {sampler.child}")
        # The child's file was read in and unlinked; the server writes its own snapshot at
        # its next check (an IVF trained since the last one) and maps that.
        deadline = time.monotonic() + 3600
        while not (files := list((data_dir / "indexes").glob("*.faiss"))):
            if time.monotonic() > deadline:
                raise RuntimeError("no snapshot an hour after start-up")
            time.sleep(1.0)
        snapshot = files[0]
        time.sleep(2.0)  # renamed, then mapped (adopted) under the writer lock
        out["snapshot_s"] = time.perf_counter() - t0
        out["snapshotted"] = status_mib(srv.pid)
        out["snapshot_bytes"] = snapshot.stat().st_size
        floor = [_timed(c, "GET", "/healthz", None)[0] for _ in range(50)]
        out["healthz_p50_ms"] = float(np.percentile(floor, 50))
        for what in ("cold", "warm"):
            if what == "cold":
                _evict(snapshot)
            times, hits = [], 0
            for i, v in enumerate(q):
                body = {"vector": v.tolist(), "k": TOP_K}
                ms, reply = _timed(c, "POST", f"/v1/collections/{NAME}/search", body)
                times.append(ms)
                found = {int(h["item"]["id"]) for h in reply["results"]}
                hits += len(found & set(best[i].tolist()))
            out[what] = {
                "recall": hits / best.size,
                "p50_ms": float(np.percentile(times, 50)),
                "p95_ms": float(np.percentile(times, 95)),
                "memory": status_mib(srv.pid),
            }
            log(f"{what}: {out[what]}")
    return out


def _timed(client: Any, method: str, path: str, body: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    reply = client.request(method, path, json=body)
    ms = (time.perf_counter() - t0) * 1000
    reply.raise_for_status()
    return ms, reply.json()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    p.add_argument("--out", type=Path)
    p.add_argument("--reuse", type=Path, help="the folder of an earlier run: its rows")
    args = p.parse_args(argv)
    work = args.reuse or args.work / f"served-ondisk-{args.n}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=args.reuse is not None)
    result = run(args.n, work, args.queries, reuse=args.reuse is not None)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
