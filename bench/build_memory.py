"""What an index build from SQL holds in memory (issue 26): each type built by the server's own
path (``IndexManager.load`` of a collection with no snapshot) in a fresh process, its peak and
after-build resident memory above the process's before the build, next to the index's own
bytes and the collection's vectors as float32 (the baseline: what holding every vector once
costs). Vectors are loaded below HTTP as the search benchmark loads them.

    python -m bench.build_memory --sizes 100000 --types flat,hnsw,ivf-sq8 [--out DIR]

Run it from another checkout (``PYTHONPATH=that/checkout``) to measure that code's builds on
the same machine.

``--reindexes N`` measures what a server keeps across builds instead: one ``mmr serve``
process reindexes the collection to each type in turn, N rounds, and after each reindex
reports its RSS above an empty server's (the fixed overhead: the model, the libraries,
measured first in the same run) per vector, beside the index's own bytes per vector.
``--server-code DIR`` runs that server from another checkout (the code before a change).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import INDEX_TYPES

DIM = 512
NAME = "bench"


@dataclass(frozen=True)
class Identity:
    """The collection's first aligner version: stored vectors are served as they are."""

    version: int

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def _rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build_once(data_dir: Path, kind: str) -> dict[str, Any]:
    """In this (fresh) process: switch the collection to ``kind``, build it from SQL as a
    server's start-up does, and report memory."""
    from app.memory import trim
    from bench.loader import sqlite_url
    from index.db import make_engine, make_sessionmaker
    from index.manager import IndexManager
    from index.stores import Stores

    engine = make_engine(sqlite_url(data_dir))
    stores = Stores.over(make_sessionmaker(engine))
    row = stores.collections.get(NAME)
    params = dict(INDEX_TYPES.get(kind) or {"type": kind})
    index_type = params.pop("type")
    row = stores.collections.set_space(
        collection_id=row.id, bump_epoch=True, index=(index_type, params)
    )
    manager = IndexManager(
        collections=stores.collections,
        items=stores.items,
        changes=stores.changes,
        aligner_of=lambda r: Identity(r.aligner_version),
        root=data_dir / "no-snapshots",
    )
    trim()
    # The peak from here on: writing 5 to clear_refs resets VmHWM (Linux 4.0+), which
    # ru_maxrss is not (imports before the build peak higher than a small build).
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kb()
    file_before = _rss_kb("RssFile")
    t0 = time.perf_counter()
    live = manager.load(row)
    seconds = time.perf_counter() - t0
    after = _rss_kb()
    file_backed = _rss_kb("RssFile") - file_before
    trim()
    trimmed = _rss_kb()
    peak = _rss_kb("VmHWM")
    described = live.index.describe()
    engine.dispose()
    return {
        "type": kind,
        "vectors": described["vectors"],
        "build_s": seconds,
        "index_bytes": described["bytes"],
        "peak_kb_above": peak - before,
        "after_kb_above": after - before,
        "trimmed_kb_above": trimmed - before,
        "file_kb_above": file_backed,
    }


def prepare(n: int, work: Path) -> Path:
    """A data dir holding a collection of ``n`` random unit vectors (SQLite)."""
    from bench.loader import load_vectors, sqlite_url
    from index.db import make_engine, make_sessionmaker, migrate
    from index.stores import Stores
    from models.encoders.aligner import Aligner

    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(sqlite_url(data_dir))
    migrate(engine)
    aligner = Aligner.identity(DIM, {"image": "m", "text": "m"})
    Stores.over(make_sessionmaker(engine)).collections.create(
        name=NAME,
        model="m",
        audio_model=None,
        dim=DIM,
        index_type="flat",
        index_params={},
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )
    engine.dispose()
    rng = np.random.default_rng(0)

    def chunks() -> Any:
        for start in range(0, n, 100_000):
            v = rng.standard_normal((min(100_000, n - start), DIM)).astype(np.float32)
            yield v / np.linalg.norm(v, axis=1, keepdims=True)

    load_vectors(data_dir, NAME, chunks())
    return data_dir


def _status_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            fields[name] = int(value.split()[0])
    return fields


def reindexes(
    n: int,
    types: list[str],
    rounds: int,
    work: Path,
    code: Path | None,
    apart_at: int | None = None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """An empty server's memory, then the same server's after each of ``rounds`` x ``types``
    reindexes of ``n`` vectors (through reindex jobs, as an operator runs them);
    ``apart_at``: its MMR_BUILD_APART_AT (None: the default)."""
    from bench.config import BenchConfig
    from bench.loader import load_vectors
    from bench.search import _reindex, _search_server
    from bench.server import Server

    cfg = BenchConfig()
    data_dir = work / "data"
    env = {"PYTHONPATH": str(code)} if code else {}
    if apart_at is not None:
        env["MMR_BUILD_APART_AT"] = str(apart_at)
    with Server(data_dir, env=env, **_search_server(cfg)) as srv:
        empty = _status_kb(srv.pid)
        with srv.client() as c:
            body = {"name": NAME, "index": {"type": "flat"}}
            c.post("/v1/collections", json=body).raise_for_status()
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    load_vectors(data_dir, NAME, [v / np.linalg.norm(v, axis=1, keepdims=True)])
    del v
    rows = []
    with Server(data_dir, env=env, **_search_server(cfg)) as srv, srv.client() as c:
        rows.append({"round": 0, "type": "flat (start-up)", "build_s": srv.startup_s})
        rows[-1].update(_status_kb(srv.pid), index_bytes=_index_bytes(c, NAME))
        for round_ in range(1, rounds + 1):
            for kind in types:
                done = _reindex(c, dict(INDEX_TYPES[kind]), cfg)
                if "build_s" not in done:
                    raise RuntimeError(f"reindex to {kind} failed: {done.get('reason')}")
                rows.append({"round": round_, "type": kind, "build_s": done["build_s"]})
                rows[-1].update(_status_kb(srv.pid), index_bytes=_index_bytes(c, NAME))
                print(rows[-1], flush=True)
    return empty, rows


def _index_bytes(client: Any, name: str) -> int:
    r = client.get(f"/v1/collections/{name}")
    r.raise_for_status()
    return int(r.json()["index"]["bytes"])


def reindex_table(n: int, empty: dict[str, int], rows: list[dict[str, Any]], label: str) -> str:
    lines = [
        f"### {label or 'reindexes in one server'}",
        "",
        f"n = {n}; empty server: RSS {empty['VmRSS'] / 1024:.0f} MiB, anonymous "
        f"{empty['RssAnon'] / 1024:.0f} MiB (the fixed overhead, subtracted below).",
        "",
        "| round | type | build s | index bytes/vector | RSS bytes/vector "
        "| anonymous bytes/vector | RSS / index |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = (r["VmRSS"] - empty["VmRSS"]) * 1024 / n
        anon = (r["RssAnon"] - empty["RssAnon"]) * 1024 / n
        index = r["index_bytes"] / n
        lines.append(
            f"| {r['round']} | {r['type']} | {r['build_s']:.1f} | {index:,.0f} | {rss:,.0f} "
            f"| {anon:,.0f} | {rss / index:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000")
    p.add_argument("--types", default="flat,hnsw,ivf-sq8")
    p.add_argument("--label", default="", help="what code ran (e.g. a commit)")
    p.add_argument("--out", type=Path, help="append the table here (markdown)")
    p.add_argument(
        "--data", type=Path, help="keep the loaded collection here (reused when it is there)"
    )
    p.add_argument("--reindexes", type=int, default=0, help="rounds of reindexes in a server")
    p.add_argument("--server-code", type=Path, help="with --reindexes: that checkout's server")
    p.add_argument(
        "--apart",
        default="",
        help="with --reindexes: MMR_BUILD_APART_AT values, a server each (e.g. 0,50000: "
        "builds in the server, then in a child)",
    )
    p.add_argument("--one", nargs=2, metavar=("DATA_DIR", "TYPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(build_once(Path(args.one[0]), args.one[1])))
        return 0
    if args.reindexes:
        text = ""
        aparts = [int(a) for a in args.apart.split(",")] if args.apart else [None]
        for n in [int(s) for s in args.sizes.split(",")]:
            for apart in aparts:
                work = Path(tempfile.mkdtemp(prefix=f"reindex-{n}-"))
                try:
                    empty, rows = reindexes(
                        n, args.types.split(","), args.reindexes, work, args.server_code, apart
                    )
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                label = args.label if apart is None else f"{args.label} MMR_BUILD_APART_AT={apart}"
                text += reindex_table(n, empty, rows, label.strip()) + "\n"
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(text)
        return 0
    lines = [
        f"### {args.label or 'build memory'}",
        "",
        "| n | type | build s | index MiB | vectors as float32 MiB | peak RSS above MiB "
        "| after MiB | of it file-backed MiB | after a trim MiB | after / index |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in [int(s) for s in args.sizes.split(",")]:
        keep = args.data is not None
        work = (args.data / str(n)) if keep else Path(tempfile.mkdtemp(prefix=f"build-{n}-"))
        try:
            data_dir = work / "data"
            if not (data_dir / "mmr.sqlite3").exists():
                prepare(n, work)
            for kind in args.types.split(","):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.build_memory", "--one", str(data_dir), kind],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                mib = 1 / 1024
                index_mib = r["index_bytes"] / 2**20
                lines.append(
                    f"| {n} | {kind} | {r['build_s']:.1f} | {index_mib:.0f} "
                    f"| {n * DIM * 4 / 2**20:.0f} | {r['peak_kb_above'] * mib:.0f} "
                    f"| {r['after_kb_above'] * mib:.0f} | {r['file_kb_above'] * mib:.0f} "
                    f"| {r['trimmed_kb_above'] * mib:.0f} "
                    f"| {r['after_kb_above'] * 1024 / max(r['index_bytes'], 1):.2f} |"
                )
                print(lines[-1], flush=True)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
