"""Restore: fill an empty database and data dir from a backup (see index.backup).

Every file is checked against the manifest before anything is written; the database is
brought to the backup's schema revision, rows go in parents first in one transaction, ids
continue where the original's did, each usable index snapshot goes where start-up loads it,
and the schema is then brought to this release's head.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text

from index.backup import (
    CACHES,
    CHUNK,
    INDEXES,
    BackupError,
    IndexPoint,
    Say,
    blob_list,
    clause,
    copy_file,
    decode,
    index_points,
    is_kept,
    pg_sequence,
    read_manifest,
    sync_all,
    verify,
)
from index.blobs import blob_path, located
from index.db import MIGRATIONS_DIR, downgrade, migrate
from index.snapshots import read_header, snapshot_file
from index.tables import Base


def restore(*, engine: Engine, data_dir: Path, source: Path, say: Say = print) -> dict[str, Any]:
    """Fill an empty database and data dir from a backup; return its manifest.

    Every file is checked before anything is written; rows go in one transaction.
    """
    manifest = read_manifest(source)
    verify(source, manifest)
    say(f"checked {len(manifest['files'])} files and {manifest['blobs']} originals: all sound")
    _require_known(manifest["schema_revision"])
    _require_empty(engine, data_dir)
    _to_revision(engine, manifest["schema_revision"])
    written = _restore_files(source, data_dir, manifest)
    try:
        with engine.begin() as conn:
            for name, entry in manifest["tables"].items():
                _load_table(conn, source, name, entry)
                say(f"{name}: {entry['rows']} rows")
            _set_sequences(conn, manifest["tables"])
            _place_snapshots(conn, source, data_dir, manifest, written, say)
    except BaseException:
        _remove(data_dir, written)
        raise
    migrate(engine)
    return manifest


def _revisions() -> list[str]:
    """Alembic revisions of this release, oldest first."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    walked = ScriptDirectory.from_config(cfg).walk_revisions()
    return [script.revision for script in reversed(list(walked))]


def _require_known(revision: str) -> None:
    if revision not in _revisions():
        raise BackupError(
            f"the backup is of schema revision {revision}, which this mmr does not know: "
            "restore it with the release that made it, or a newer one"
        )


def _require_empty(engine: Engine, data_dir: Path) -> None:
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            # SQLite's full-text index (items_fts and its shadow tables) is derived from
            # the items, and holds its settings even when empty.
            if name == "alembic_version" or name.startswith("items_fts"):
                continue
            if conn.execute(text(f'SELECT 1 FROM "{name}" LIMIT 1')).first() is not None:
                raise BackupError(
                    f"the database already holds rows (table {name}): restore fills an empty "
                    "deployment only; point MMR_DATABASE_URL at a new, empty database"
                )
    for folder in ("blobs", INDEXES):
        if any(is_kept(p) for p in (data_dir / folder).rglob("*")):
            raise BackupError(
                f"{data_dir / folder} is not empty: restore fills an empty data dir only; "
                "point MMR_DATA_DIR at a new folder"
            )


def _to_revision(engine: Engine, revision: str) -> None:
    """Bring the (empty) database to the backup's schema, up or down."""
    current = None
    with engine.connect() as conn:
        if "alembic_version" in inspect(conn).get_table_names():
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    order = _revisions()
    if current is not None and current in order and order.index(current) > order.index(revision):
        downgrade(engine, revision)
    else:
        migrate(engine, revision)


def _restore_files(source: Path, data_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """Copy originals and caches into the data dir, durably; return the cache files written
    (a cache file already there is kept). The data dir's blobs folder was empty."""
    written: list[Path] = []
    try:
        for sha, _ in blob_list(source):
            # A backup of an earlier release keeps its originals two folders deep.
            _restore_file(located(source / "blobs", sha), blob_path(data_dir / "blobs", sha), sha)
        for rel, entry in manifest["files"].items():
            if _cached(rel) and not (data_dir / rel).exists():
                _restore_file(source / rel, data_dir / rel, entry["sha256"])
                written.append(data_dir / rel)
        sync_all()  # originals are durable before the rows that refer to them commit
    except BaseException:
        _remove(data_dir, written)
        raise
    return written


def _cached(rel: str) -> bool:
    return rel.split("/", 1)[0] in CACHES


def _restore_file(source: Path, target: Path, sha: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore.tmp")
    if copy_file(source, tmp)[1] != sha:
        tmp.unlink()
        raise BackupError(f"{source} changed while it was being restored")
    os.replace(tmp, target)


def _remove(data_dir: Path, written: list[Path]) -> None:
    """Take back what a failed restore copied, so that it can be run again."""
    shutil.rmtree(data_dir / "blobs", ignore_errors=True)
    for path in written:
        path.unlink(missing_ok=True)


def _place_snapshots(
    conn: Connection,
    source: Path,
    data_dir: Path,
    manifest: dict[str, Any],
    written: list[Path],
    say: Say,
) -> None:
    """Put each collection's snapshot where start-up loads it, when it can serve the rows
    restored (checked again here, by the rule start-up applies); say for every collection
    whether start-up replays the log after its snapshot or rebuilds it from the rows."""
    entries = manifest.get("indexes")
    for cid, point in index_points(conn).items():
        rel = f"{INDEXES}/{snapshot_file(cid)}"  # where index.backup put it, and start-up reads
        entry = (entries or {}).get(str(cid), {})
        header = None
        why: str | None
        if entries is None:
            why = f"a backup of format {manifest['format']!r} holds no index snapshots"
        elif entry.get("file") != rel or rel not in manifest["files"]:
            why = entry.get("rebuild", "the backup holds no snapshot of it")
        else:
            header = read_header(source / rel)
            why = point.unusable(header)
        if why or header is None:
            say(f"index of {point.name}: rebuilt from SQL at start-up ({why}){_caveat(point)}")
            continue
        written.append(data_dir / rel)
        _restore_file(source / rel, data_dir / rel, manifest["files"][rel]["sha256"])
        say(
            f"index of {point.name}: from its snapshot at change {header.seq}; start-up "
            "replays the changes logged after it"
        )
    sync_all()


def _caveat(point: IndexPoint) -> str:
    if point.index_type == "flat":
        return ""  # exact search: the same answers however the index is built
    return (
        f"; a rebuilt {point.index_type} index may answer the last ranks of some searches "
        "otherwise than the original"
    )


def _load_table(conn: Connection, source: Path, name: str, entry: dict[str, Any]) -> None:
    columns = entry["columns"]
    insert = clause(name, columns).insert()
    count = 0
    with gzip.open(source / entry["file"], "rt", encoding="utf-8") as f:
        batch = []
        for line in f:
            values = json.loads(line)
            batch.append({c: decode(v, kind) for v, (c, kind) in zip(values, columns, strict=True)})
            if len(batch) == CHUNK:
                count += _insert(conn, insert, batch)
        count += _insert(conn, insert, batch)
    if count != entry["rows"]:
        raise BackupError(
            f"{source / entry['file']} holds {count} rows, the manifest says {entry['rows']}"
        )


def _insert(conn: Connection, insert: Any, batch: list[dict[str, Any]]) -> int:
    if batch:
        conn.execute(insert, batch)
    count = len(batch)
    batch.clear()
    return count


def _set_sequences(conn: Connection, tables: dict[str, Any]) -> None:
    """Ids continue where the original's did: past the largest kept, and past deleted ones."""
    for tbl in Base.metadata.sorted_tables:
        auto = tbl.autoincrement_column
        if tbl.name not in tables or auto is None:
            continue
        top = conn.execute(text(f'SELECT MAX("{auto.name}") FROM "{tbl.name}"')).scalar() or 0
        value = max(int(top), int(tables[tbl.name].get("sequence", 0)))
        if value < 1:
            continue
        if conn.dialect.name == "sqlite":
            conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": tbl.name})
            stmt = text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)")
            conn.execute(stmt, {"t": tbl.name, "v": value})
        elif seq := pg_sequence(conn, tbl.name, auto.name):
            conn.execute(text("SELECT setval(:s, :v, true)"), {"s": seq, "v": value})
