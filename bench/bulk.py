"""Bulk writes at encoder speed (issue 22): the batch route against ``/v1/embed`` on one
server, the same batches from the same concurrent clients, texts and small JPEGs, on SQLite
and on Postgres. ``/v1/embed`` decodes and encodes and stores nothing: it is the encoder's
ceiling over HTTP, the baseline of each row. The batch route does the same and then stores
the originals, commits the batch in one transaction and adds it to the index. Nothing timed
is asserted.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.clients import BOUNDARY, RawHttp
from bench.config import BenchConfig, BulkConfig
from bench.data import sentences, small_jpegs
from bench.server import Server

Log = Callable[[str], None]
MIGRATE_FROM = "random:mmr-tiny"  # the migrated collection's first model (random weights)
MIGRATE_FROM_QUICK = "mmr-mini"  # ... when the bench's own model is that one (--quick)
Body = tuple[bytes, str]  # a request body and its content type


def run_bulk(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Each database in turn: one server, texts then images, embed then batch."""
    b = cfg.bulk
    texts = sentences(b.texts, seed=cfg.seed)
    # Distinct JPEGs for every round, the warm-up and the ingest: an original already on
    # disk is not written again, and each measurement must pay for writing its own.
    made = small_jpegs(b.images * (b.rounds + 1) + b.batch, seed=cfg.seed)
    rounds = [made[n * b.images : (n + 1) * b.images] for n in range(b.rounds + 1)]
    jpegs, fresh, warm = rounds[0], rounds[-1], made[-b.batch :]
    rows, skipped = [], []
    ingest: dict[str, Any] = {}
    migration: dict[str, Any] = {}
    for database, env in _databases(b, log):
        if env is None:
            skipped.append(database)
            continue
        data_dir = Path(tempfile.mkdtemp(prefix="bulk-", dir=work)) / "data"
        with (
            env as extra,
            Server(
                data_dir,
                model=b.model,
                precision="fp32",
                ready_timeout_s=cfg.ready_timeout_s,
                # the migration's source collection is made with the other model
                env={**extra, "MMR_ALLOWED_MODELS": f"{MIGRATE_FROM},{MIGRATE_FROM_QUICK}"},
            ) as srv,
        ):
            measured = {}
            for kind, each, first in (
                ("texts", [texts] * b.rounds, texts[: b.batch]),
                ("images", rounds[: b.rounds], warm),
            ):
                row = measured[kind] = _measure(srv, b, kind, each, first)
                rows.append({"database": database, **row})
                log(
                    f"bulk {database} {kind}: embed {row['embed_per_s']:.0f}/s, batch write "
                    f"{row['write_per_s']:.0f}/s ({row['ratio']:.2f}x)"
                )
            if database == "SQLite":
                migration = _migrate(srv, b, texts, jpegs, measured)
                log(
                    f"bulk: migrate {migration['items']} items {migration['source']} -> "
                    f"{migration['target']} at {migration['items_per_s']:.0f}/s "
                    f"({migration['ratio']:.2f}x the encoder's), "
                    f"rollback {migration['rollback_s']:.1f} s"
                )
                ingest = _ingest_folder(srv, b, work, texts, fresh, measured)
                log(
                    f"bulk: mmr ingest {ingest['files']} files at {ingest['files_per_s']:.0f}/s "
                    f"({ingest['ratio']:.2f}x the encoder's), resumed in {ingest['resume_s']:.1f} s"
                )
    return {
        "model": b.model,
        "precision": "fp32",
        "batch": b.batch,
        "clients": b.clients,
        "rounds": b.rounds,
        "turn": b.turn,
        "rows": rows,
        "skipped": skipped,
        "ingest": ingest,
        "migration": migration,
    }


def _migrate(
    srv: Server,
    b: BulkConfig,
    texts: list[str],
    jpegs: list[bytes],
    measured: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """A collection of the same texts and JPEGs made with another model, migrated to the
    bench's model by a migrate job (the server's in-process worker), then rolled back (the
    kept space: nothing to encode, the switch alone). Its ceiling is the time ``/v1/embed``
    of the bench's model took for the same items."""
    source = MIGRATE_FROM_QUICK if b.model == MIGRATE_FROM else MIGRATE_FROM
    raw = RawHttp(srv.url)
    try:
        status, data = raw.post_json(
            "/v1/collections", json.dumps({"name": "migrated", "model": source}).encode()
        )
        if status != 201:
            raise RuntimeError(f"creating the migrated collection: {status} {data[:200]!r}")
        path = "/v1/collections/migrated/items/batch"
        for kind, items in (("texts", texts), ("images", jpegs)):
            bodies = [
                _write_body(kind, items[i : i + b.batch], i) for i in range(0, len(items), b.batch)
            ]
            _send(srv.url, path, bodies, b.clients)
        job = {"type": "migrate", "collection": "migrated", "model": b.model}
        t0 = time.perf_counter()
        done = _job(raw, raw.post_json("/v1/jobs", json.dumps(job).encode()))
        wall_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = _job(raw, raw.post_json("/v1/collections/migrated/migration/rollback", b"{}"))
        rollback_s = time.perf_counter() - t0
    finally:
        raw.close()
    metrics = done["metrics"]
    ceiling_s = measured["texts"]["embed_s"] + measured["images"]["embed_s"]
    return {
        "source": source,
        "target": b.model,
        "items": metrics["items"],
        "seconds": wall_s,
        "job_seconds": metrics["seconds"],
        "items_per_s": metrics["items"] / wall_s,
        "ceiling_s": ceiling_s,
        "ratio": ceiling_s / wall_s,
        "rollback_s": rollback_s,
        "rollback_encoded": back["metrics"]["encoded"],
    }


def _job(raw: RawHttp, created: tuple[int, bytes], timeout_s: float = 1800) -> dict[str, Any]:
    """Wait for a job the server answered 202 for; its final state (it must succeed)."""
    status, data = created
    if status != 202:
        raise RuntimeError(f"a job was refused: {status} {data[:300]!r}")
    job_id = json.loads(data)["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, data = raw.get(f"/v1/jobs/{job_id}")
        job: dict[str, Any] = json.loads(data)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not end in {timeout_s:.0f} s")


def _ingest_folder(
    srv: Server,
    b: BulkConfig,
    work: Path,
    texts: list[str],
    jpegs: list[bytes],
    measured: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """``mmr ingest`` on a folder of the same texts (``.txt``) and JPEGs, in subfolders of
    100, then again (everything skipped). Its ceiling is the time ``/v1/embed`` took for
    the same items."""
    folder = Path(tempfile.mkdtemp(prefix="ingest-folder-", dir=work))
    for n, text in enumerate(texts):
        (folder / f"t{n // 100}").mkdir(exist_ok=True)
        (folder / f"t{n // 100}" / f"{n}.txt").write_text(text, encoding="utf-8")
    for n, data in enumerate(jpegs):
        (folder / f"i{n // 100}").mkdir(exist_ok=True)
        (folder / f"i{n // 100}" / f"{n}.jpg").write_bytes(data)
    argv = [sys.executable, "-m", "app.cli", "ingest", str(folder), "--collection", "folder"]
    argv += ["--server", srv.url, "--batch", str(b.batch), "--concurrency", str(b.clients)]
    first_s, first = _timed([*argv, "--create"], work)
    again_s, again = _timed(argv, work)
    files = len(texts) + len(jpegs)
    ceiling_s = measured["texts"]["embed_s"] + measured["images"]["embed_s"]
    out = {
        "files": files,
        "seconds": first_s,
        "files_per_s": files / first_s,
        "ceiling_s": ceiling_s,
        "ratio": ceiling_s / first_s,
        "summary": first,
        "resume_s": again_s,
        "resume_summary": again,
    }
    if importlib.util.find_spec("ray") is not None:
        # The same folder through a Ray cluster started on this machine (ray.init()): the
        # images decoded and encoded by its actors, the texts by the server.
        ray_argv = [*argv, "--engine", "ray", "--create"]
        ray_argv[ray_argv.index("folder")] = "folder_ray"
        out["ray_s"], out["ray_summary"] = _timed(ray_argv, work)
    return out


def _timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds a command took, and the first line it printed (its summary)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {done.stdout}{done.stderr[-2000:]}")
    return seconds, done.stdout.splitlines()[0]


def _databases(b: BulkConfig, log: Log) -> Iterator[tuple[str, Any]]:
    yield "SQLite", _nothing()
    yield "Postgres", _postgres_schema(b.postgres_url, log)


@contextmanager
def _nothing() -> Iterator[dict[str, str]]:
    yield {}


def _postgres_schema(url: str, log: Log) -> Any:
    """A context giving the server's env for a schema of its own (dropped after), or None
    when the Postgres server does not answer."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    schema = f"bench_bulk_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError:
        admin.dispose()
        log(f"bulk: Postgres at {url} does not answer: SQLite only")
        return None

    @contextmanager
    def scoped() -> Iterator[dict[str, str]]:
        try:
            yield {"MMR_DATABASE_URL": f"{url}?options=-csearch_path%3D{schema}"}
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    return scoped()


def _measure(
    srv: Server, b: BulkConfig, kind: str, rounds: list[list[Any]], warm: list[Any]
) -> dict[str, Any]:
    """Per round (its own items, a fresh collection), in turns of ``b.turn`` batches: embed
    the turn's batches, then write them (same clients). A shared VM's speed drifts by 10-20%
    within a minute: turns of a second or so give both routes the same machine, where a
    whole round of one then of the other did not (single rounds read 0.56-0.91). Seconds are
    a round's mean; the ratio is of the totals, and each turn's is kept."""
    # Warm-up, untimed: the first forward of each shape, and the write path's first batch
    # (its statements compiled and prepared, its threads and connections started).
    _send(srv.url, "/v1/embed", [_embed_body(kind, warm)], 1)
    warmed = _batch_path(_create(srv, f"bulk_{kind}_warm"))
    _send(srv.url, warmed, [_write_body(kind, warm, 0)], 1)
    embed_s = write_s = 0.0
    failed = 0
    ratios, turns = [], []
    for n, items in enumerate(rounds):
        path = _batch_path(_create(srv, f"bulk_{kind}_{n}"))
        batches = [items[i : i + b.batch] for i in range(0, len(items), b.batch)]
        round_e = round_w = 0.0
        for t in range(0, len(batches), b.turn):
            turn = range(t, min(t + b.turn, len(batches)))
            embed = [_embed_body(kind, batches[i]) for i in turn]
            write = [_write_body(kind, batches[i], i * b.batch) for i in turn]
            e_s, e_failed = _send(srv.url, "/v1/embed", embed, b.clients)
            w_s, w_failed = _send(srv.url, path, write, b.clients)
            round_e, round_w, failed = round_e + e_s, round_w + w_s, failed + e_failed + w_failed
            turns.append(e_s / w_s)
        embed_s, write_s = embed_s + round_e, write_s + round_w
        ratios.append(round_e / round_w)
    return {
        "kind": kind,
        "items": len(rounds[0]),
        "rounds": len(rounds),
        "turns": len(turns),
        "embed_s": embed_s / len(rounds),
        "write_s": write_s / len(rounds),
        "embed_per_s": sum(map(len, rounds)) / embed_s,
        "write_per_s": sum(map(len, rounds)) / write_s,
        "ratio": embed_s / write_s,
        "round_ratios": ratios,
        "turn_ratios": turns,
        "failed": failed,
    }


def _create(srv: Server, collection: str) -> str:
    created = RawHttp(srv.url)
    try:
        status, data = created.post_json(
            "/v1/collections", json.dumps({"name": collection}).encode()
        )
        if status != 201:
            raise RuntimeError(f"creating {collection}: {status} {data[:200]!r}")
    finally:
        created.close()
    return collection


def _batch_path(collection: str) -> str:
    return f"/v1/collections/{collection}/items/batch"


def _embed_body(kind: str, batch: list[Any]) -> Body:
    if kind == "texts":
        return json.dumps({"texts": batch}).encode(), "application/json"
    return _multipart([("file", f"{n}.jpg", data) for n, data in enumerate(batch)])


def _write_body(kind: str, batch: list[Any], first: int) -> Body:
    if kind == "texts":
        entries = [{"id": f"t{first + n}", "text": t} for n, t in enumerate(batch)]
        return json.dumps(entries).encode(), "application/json"
    parts: list[tuple[str, str | None, bytes]] = [
        ("file", f"{first + n}.jpg", data) for n, data in enumerate(batch)
    ]
    parts += [("id", None, f"i{first + n}".encode()) for n in range(len(batch))]
    return _multipart(parts)


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> Body:
    out = bytearray()
    for name, filename, data in parts:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            out += f'; filename="{filename}"\r\nContent-Type: image/jpeg'.encode()
        out += b"\r\n\r\n" + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


def _send(url: str, path: str, bodies: list[Body], clients: int) -> tuple[float, int]:
    """Every body once, ``clients`` at a time (each takes the next unsent one); seconds from
    the first send to the last answer, and how many requests or entries failed."""
    queue = iter(enumerate(bodies))
    lock = threading.Lock()
    failed = [0]

    def client() -> None:
        raw = RawHttp(url)
        try:
            while True:
                with lock:
                    nxt = next(queue, None)
                if nxt is None:
                    return
                body, content_type = nxt[1]
                try:
                    status, data = raw.post(path, body, content_type)
                except (OSError, http.client.HTTPException):
                    status, data = 0, b""
                bad = status != 200 or _entries_failed(data)
                with lock:
                    failed[0] += int(bad)
        finally:
            raw.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0, failed[0]


def _entries_failed(data: bytes) -> bool:
    results = json.loads(data).get("results")
    return isinstance(results, list) and any(
        isinstance(r, dict) and r.get("status") not in (200, 201, None) for r in results
    )
