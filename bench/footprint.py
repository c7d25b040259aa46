"""What a stored item costs on disk (issue 26): the rows the store writes for texts and
images of a 512-d model, on SQLite and on Postgres, as this release writes them (raw features
in float16, no vectors where the head is the identity) and as the earlier release wrote them
(float32 features and float32 vectors: the same store, its encoding swapped back), in the same
run; the write rate of each through the store (batches of 64, one transaction each); and what
ten million items cost, extrapolated. Nothing timed is asserted.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from sqlalchemy import Engine, create_engine, text

from bench.config import BenchConfig
from bench.data import sentences
from index import items as items_module
from index.collections import CollectionCache, CollectionStore
from index.columns import to_blob
from index.db import make_engine, make_sessionmaker, migrate
from index.items import ItemDraft, ItemStore

Log = Callable[[str], None]
DIM = 512  # ViT-B-32's space (the default model's)
BATCH = 64
TEN_MILLION = 10_000_000
# The formats measured: name -> (how features are encoded, whether vectors are stored).
FORMATS: dict[str, tuple[Callable[[np.ndarray], bytes] | None, bool]] = {
    "earlier release: float32 feature + vector": (to_blob, True),
    "this release: float16 feature, vector derived": (None, False),
}
TABLES = ("items", "item_tags", "changes", "item_text")


def run_footprint(cfg: BenchConfig, work: Path, log: Log) -> dict[str, Any]:
    """Each database, each format, texts then images: bytes a row and rows a second."""
    n = cfg.footprint_items
    captions = sentences(n, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # Raw features as ViT-B-32 makes them: not unit length (its norms are near 10).
    features = (rng.standard_normal((n, DIM)) * 0.45).astype(np.float32)
    rows: list[dict[str, Any]] = []
    for database, opened in _databases(cfg, work, log):
        if opened is None:
            continue
        for fmt, (encoding, stored) in FORMATS.items():
            for kind in ("text", "image"):
                with opened() as (engine, size_of):
                    measured = _write(engine, kind, captions, features, encoding, stored)
                    size = size_of()
                total = sum(size.values())
                rows.append(
                    {
                        "database": database,
                        "format": fmt,
                        "kind": kind,
                        "items": n,
                        "bytes_per_item": total / n,
                        "tables": {k: v / n for k, v in size.items()},
                        "items_per_s": n / measured,
                        "ten_million_gb": total / n * TEN_MILLION / 1e9,
                    }
                )
                log(
                    f"footprint: {database} {kind} {fmt}: {total / n:.0f} B/item, "
                    f"{n / measured:.0f} items/s"
                )
    return {"rows": rows, "dim": DIM, "batch": BATCH}


def _write(
    engine: Engine,
    kind: str,
    captions: list[str],
    features: np.ndarray,
    encoding: Callable[[np.ndarray], bytes] | None,
    stored: bool,
) -> float:
    """Seconds to write every item through the store, in batches of BATCH."""
    sessions = make_sessionmaker(engine)
    collections, items = CollectionStore(sessions, CollectionCache()), ItemStore(sessions)
    row = collections.create(
        name=f"c{uuid.uuid4().hex[:8]}",
        model="bench",
        audio_model=None,
        dim=DIM,
        index_type="flat",
        index_params={},
        aligner=b"",
        aligner_meta={},
    )
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    swap = (
        mock.patch.object(items_module, "to_features", encoding)
        if encoding is not None
        else nullcontext()
    )
    start = time.perf_counter()
    with swap:
        for at in range(0, len(features), BATCH):
            drafts = [
                ItemDraft(
                    external_id=f"{kind}-{i}",
                    modality=kind,
                    sha256=uuid.uuid4().hex * 2,
                    content_type="text/plain; charset=utf-8" if kind == "text" else "image/jpeg",
                    size_bytes=len(captions[i]) if kind == "text" else 48_000,
                    feature=features[i : i + 1],
                    vector=unit[i : i + 1] if stored else None,
                    aligner_version=1,
                    text=captions[i] if kind == "text" else None,
                    metadata={"album": f"album {i % 50}", "taken": f"2024-05-{i % 28 + 1:02d}"},
                )
                for i in range(at, min(at + BATCH, len(features)))
            ]
            items.upsert_many(collection_id=row.id, drafts=drafts)
    return time.perf_counter() - start


Opened = Callable[[], AbstractContextManager[tuple[Engine, Callable[[], dict[str, int]]]]]


def _databases(cfg: BenchConfig, work: Path, log: Log) -> Iterator[tuple[str, Opened | None]]:
    yield "SQLite", lambda: _sqlite(work)
    try:
        with create_engine(cfg.bulk.postgres_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect: no Postgres
        log(f"footprint: Postgres at {cfg.bulk.postgres_url} does not answer ({exc}): skipped")
        yield "Postgres", None
        return
    yield "Postgres", lambda: _postgres(cfg.bulk.postgres_url)


@contextmanager
def _sqlite(work: Path) -> Iterator[tuple[Engine, Callable[[], dict[str, int]]]]:
    folder = Path(tempfile.mkdtemp(prefix="footprint-", dir=work))
    engine = make_engine(f"sqlite:///{folder / 'mmr.sqlite3'}")
    migrate(engine)

    def size_of() -> dict[str, int]:
        # Pages each table and its indexes take (SQLite's dbstat), the WAL checkpointed.
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            found = conn.exec_driver_sql(
                "SELECT tbl_name, name FROM sqlite_master WHERE type IN ('table', 'index')"
            ).all()
            owner = {name: table for table, name in found}
            pages = conn.exec_driver_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
            return _by_family((owner.get(name, name), size) for name, size in pages)

    try:
        yield engine, size_of
    finally:
        engine.dispose()


@contextmanager
def _postgres(url: str) -> Iterator[tuple[Engine, Callable[[], dict[str, int]]]]:
    schema = f"bench_footprint_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(f"{url}?options=-csearch_path%3D{schema}")
    migrate(engine)

    def size_of() -> dict[str, int]:
        # Heap, TOAST and indexes of each table (pg_total_relation_size), after a VACUUM
        # that sets the visibility map (nothing was deleted: it frees nothing).
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM")
            found = conn.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema AND c.relkind = 'r'"
                ),
                {"schema": schema},
            ).all()
        return _by_family((name, size) for name, size in found)

    try:
        yield engine, size_of
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _by_family(sizes: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Bytes of each measured table, its indexes and shadow tables included."""
    out: dict[str, int] = {}
    for name, size in sizes:
        table = _family(name)
        if table is not None:
            out[table] = out.get(table, 0) + int(size)
    return out


def _family(table: str) -> str | None:
    """The measured table a table or index belongs to (full-text shadow tables to
    ``item_text``; Postgres keeps its text search in ``items``), or None for the others
    (collections, aligners: a row each)."""
    if table.startswith("items_fts"):
        return "item_text"
    for name in TABLES:
        if table == name or table.startswith(name + "_"):
            return name
    return None


def footprint_md(footprint: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    """The phase's section of results.md: bytes an item, against the earlier format."""
    lines = [
        "## What a stored item costs",
        "",
        f"Items of a {footprint['dim']}-d model written through the store (batches of "
        f"{footprint['batch']}, a transaction each: the rows, tags, text search and change "
        "log the batch route writes; no originals, no index), as this release writes them "
        "and as the earlier release did (float32 features and vectors), in the same run. "
        "Bytes: SQLite's pages (dbstat), Postgres' heap, TOAST and indexes "
        f"(pg_total_relation_size). On {machine['cpu']}.",
        "",
        "| database | kind | format | bytes/item | x earlier | items/s written | 10M items, GB |",
        "|---|---|---|---|---|---|---|",
    ]
    earlier = {
        (r["database"], r["kind"]): r
        for r in footprint["rows"]
        if r["format"].startswith("earlier")
    }
    for r in footprint["rows"]:
        base = earlier.get((r["database"], r["kind"]))
        ratio = r["bytes_per_item"] / base["bytes_per_item"] if base else float("nan")
        lines.append(
            f"| {r['database']} | {r['kind']} | {r['format']} | {r['bytes_per_item']:.0f} | "
            f"{ratio:.2f} | {r['items_per_s']:.0f} | {r['ten_million_gb']:.1f} |"
        )
    lines += ["", "Per table, bytes/item:", ""]
    for r in footprint["rows"]:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["tables"].items()))
        lines.append(f"- {r['database']} {r['kind']}, {r['format']}: {parts}")
    return [*lines, ""]
