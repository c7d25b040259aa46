"""Backups: the SQL rows of one point in time, the originals they refer to, the cached
audio heads and each collection's index snapshot, with a manifest of checksums
(``index.restore`` reads them back).

Rows are dumped portably (gzipped JSON lines, one file per table), not as a database file,
so a SQLite backup restores into Postgres and back. An index could be rebuilt from the rows
(invariant 1), but a trained IVF rebuilt so trains other lists and answers otherwise in its
last ranks; a snapshot copied *before* the rows are read, replayed with the changes the rows
log after it, gives the original's lists back (see :func:`_point_in_time`). docs/backup.md
says what is in a backup and why.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import JSON, Connection, DateTime, Engine, LargeBinary, inspect, text
from sqlalchemy.sql import column, select, table
from sqlalchemy.sql.expression import TableClause

from index.blobs import blob_path, find, holding_trash, located
from index.snapshots import SnapshotHeader, collection_of, fsync_dir, read_header, snapshot_file
from index.tables import Base

# Format 2 added index snapshots; a format-1 backup restores with every index rebuilt.
# 3: texts' originals are their rows, not files (a release that reads 2 at most would restore
# a 3 without them, then miss them); 2: index snapshots.
FORMAT = "mmr-backup 3"
READABLE = ("mmr-backup 1", "mmr-backup 2", FORMAT)
INDEXES = "indexes"  # the data dir's folder of index snapshots (index.manager)
MANIFEST = "manifest.json"
BLOB_LIST = "blobs.jsonl"
CHUNK = 500  # rows per fetch and per insert: a table is never held whole in memory
COPY_BYTES = 1 << 20
CACHES = ("aligners",)  # data-dir folders copied as they are (bootstrapped audio heads)
RETRIES = 3

Say = Callable[[str], None]


class BackupError(Exception):
    """A backup that cannot be made or restored; the message names the file and the fix."""


class _BlobGone(Exception):
    """An original deleted (with its item) after the snapshot and gone from the trash too."""


# -- the snapshot's tables -----------------------------------------------------------------


def _kind(type_: Any) -> str:
    """How a column's values are written: bytes as base64, times as UTC ISO strings."""
    if isinstance(type_, LargeBinary):
        return "bytes"
    if isinstance(type_, DateTime):
        return "datetime"
    if isinstance(type_, JSON):
        return "json"
    return "plain"


_TYPES: dict[str, Any] = {
    "bytes": LargeBinary(),
    "datetime": DateTime(timezone=True),
    "json": JSON(),
    "plain": None,  # passed through as the driver gives and takes it
}


def clause(name: str, columns: list[list[str]]) -> TableClause:
    """A bare table of these columns: no defaults, so it inserts exactly what was dumped."""
    return table(name, *(column(c, _TYPES.get(kind)) for c, kind in columns))


def encode(value: Any, kind: str) -> Any:
    """A column's value as a backup writes it in JSON (``decode`` reads it back)."""
    if value is None or kind in ("plain", "json"):
        return value
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    # SQLite gives back naive times (the store writes UTC); Postgres gives its session's zone.
    stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return stamp.isoformat()


def decode(value: Any, kind: str) -> Any:
    """A value as written by the backup, back as the column takes it."""
    if value is None or kind in ("plain", "json"):
        return value
    if kind == "bytes":
        return base64.b64decode(value)
    return datetime.fromisoformat(value)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction: every table is read as of one instant, writers go on."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The sqlite3 module opens no transaction for a SELECT: each would see its own
            # moment. An explicit BEGIN makes them one WAL read snapshot (writers not blocked).
            conn.exec_driver_sql("BEGIN")
        else:
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        try:
            yield conn
        finally:
            conn.rollback()


def _tables(conn: Connection) -> list[tuple[str, list[list[str]], list[str]]]:
    """(name, [[column, kind]], primary key) of every table of the schema, parents first.

    Tables come from ``Base.metadata`` (a table added to the schema is backed up with no
    change here); columns from the database itself, so an older schema dumps as it is.
    """
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    found = []
    for tbl in Base.metadata.sorted_tables:
        if tbl.name not in present:
            continue
        kinds = {c.name: _kind(c.type) for c in tbl.columns}
        # A column the schema has since dropped still has its database type; a generated
        # one (Postgres' items.fulltext) is the database's to compute again, not data.
        columns = [
            [c["name"], kinds.get(c["name"]) or _kind(c["type"])]
            for c in inspector.get_columns(tbl.name)
            if not c.get("computed")
        ]
        found.append((tbl.name, columns, [c.name for c in tbl.primary_key.columns]))
    return found


class IndexPoint(NamedTuple):
    """A collection's index as the rows of one point in time describe it."""

    name: str
    index_type: str
    aligner_version: int
    epoch: int
    pruned_seq: int  # the change log holds every change after this one
    last_seq: int  # the newest change the rows hold

    def unusable(self, header: SnapshotHeader | None) -> str | None:
        """Why a snapshot (None: unreadable) cannot serve these rows; None when it can."""
        if header is None:
            return "its snapshot is unreadable (damaged, or written by an older release)"
        return header.unusable(
            pruned_seq=self.pruned_seq,
            aligner_version=self.aligner_version,
            epoch=self.epoch,
            last_seq=self.last_seq,
        )


def index_points(conn: Connection) -> dict[int, IndexPoint]:
    """Every collection's :class:`IndexPoint` as this transaction sees the rows (columns an
    older schema lacks read as their defaults)."""
    present = {c["name"] for c in inspect(conn).get_columns("collections")}
    defaults = {"index_type": "'flat'", "aligner_version": "0", "index_epoch": "0"}
    defaults["changes_pruned_seq"] = "0"
    picked = ", ".join(name if name in present else value for name, value in defaults.items())
    last = "SELECT MAX(seq) FROM changes WHERE changes.collection_id = collections.id"
    rows = conn.execute(text(f"SELECT id, name, {picked}, ({last}) FROM collections"))
    points = {}
    for cid, name, kind, version, epoch, pruned, newest in rows:
        pruned = int(pruned or 0)
        points[int(cid)] = IndexPoint(
            name, kind, int(version), int(epoch), pruned, max(pruned, int(newest or 0))
        )
    return points


def _revision(conn: Connection) -> str:
    if "alembic_version" not in inspect(conn).get_table_names():
        raise BackupError(
            "the database has no mmr schema (no alembic_version table): check MMR_DATABASE_URL "
            "and MMR_DATA_DIR point at the deployment to back up"
        )
    return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def _sequences(conn: Connection, present: set[str]) -> dict[str, int]:
    """The last id handed out per table (above the largest kept one when the last rows were
    deleted): a restore continues from it, so a deleted id is never given out again."""
    if conn.dialect.name == "sqlite":
        # (sqlite_sequence exists: every table with an id is AUTOINCREMENT; see index.tables)
        rows = conn.execute(text("SELECT name, seq FROM sqlite_sequence"))
        return {name: int(seq) for name, seq in rows}
    found = {}
    for tbl in Base.metadata.sorted_tables:
        auto = tbl.autoincrement_column if tbl.name in present else None
        seq = auto is not None and pg_sequence(conn, tbl.name, auto.name)
        if seq:
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {seq}")).one()
            found[tbl.name] = int(last) if called else int(last) - 1
    return found


def pg_sequence(conn: Connection, name: str, col: str) -> str | None:
    """The (quoted, qualified) name of the sequence behind a Postgres serial column."""
    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": col})
    return seq.scalar()


# -- files and the manifest ----------------------------------------------------------------


def sha256_of(path: Path) -> tuple[int, str]:
    """A file's size and sha256, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(COPY_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Files:
    """The files of a backup being written, each with its size and sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[str, dict[str, Any]] = {}

    def target(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, rel: str) -> None:
        size, sha = sha256_of(self.root / rel)
        self.entries[rel] = {"size": size, "sha256": sha}

    def copy(self, source: Path, rel: str) -> None:
        size, sha = copy_file(source, self.target(rel))
        self.entries[rel] = {"size": size, "sha256": sha}

    def discard(self, rel: str) -> None:
        """Take a file back out of the backup."""
        (self.root / rel).unlink(missing_ok=True)
        self.entries.pop(rel, None)


def copy_file(source: Path, target: Path) -> tuple[int, str]:
    """Copy a file, hashing it on the way; return its size and sha256.

    Not fsynced one by one (an fsync per original and per folder took 29 of 30 seconds for
    5,000 of them): ``sync_all`` makes them durable together before anything refers to them.
    """
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(COPY_BYTES):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return size, digest.hexdigest()


def blob_list(source: Path) -> Iterator[tuple[str, int]]:
    """(sha256, size) of every original in a backup, from its checksummed list."""
    with open(source / BLOB_LIST, encoding="utf-8") as f:
        for line in f:
            sha, size = json.loads(line)
            yield sha, size


def _write_manifest(root: Path, body: dict[str, Any]) -> None:
    """Written last, atomically: a backup without its manifest is partial and refused."""
    sync_all()  # every other file is durable before the manifest can say the backup is whole
    sealed = {"manifest": body, "sha256": _seal(body)}
    tmp = root / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sealed, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    fsync_dir(root)


def sync_all() -> None:
    """Make every file written so far durable, their folders included (Linux's sync(2)
    returns once the data is on disk)."""
    os.sync()


def _seal(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of a backup; BackupError when it is missing, damaged or of another format."""
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{path} is missing: the backup is partial (the manifest is written last, once "
            "every file is copied) or this is not a backup folder"
        )
    try:
        sealed = json.loads(path.read_text(encoding="utf-8"))
        body = sealed["manifest"]
        ok = sealed["sha256"] == _seal(body)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path} is damaged (not a sealed manifest: {exc})") from exc
    if not ok:
        raise BackupError(f"{path} is damaged: its content does not match its checksum")
    if body.get("format") not in READABLE:
        raise BackupError(
            f"{path} is of format {body.get('format')!r}; this mmr reads {', '.join(READABLE)}: "
            "restore it with the release that made it"
        )
    return dict(body)


def verify(source: Path, manifest: dict[str, Any]) -> None:
    """Check every file against the manifest, and every original against the list of them
    (size, then sha256); BackupError names the first that fails."""
    for rel, entry in manifest["files"].items():
        parts = PurePosixPath(rel).parts
        if not parts or parts[0] == "/" or ".." in parts or "\\" in rel:
            # A restore writes some files to the same path under the data dir.
            raise BackupError(
                f"{source / MANIFEST} names {rel!r}, a path outside the backup folder: this is "
                "not a backup mmr made; restore from one made by mmr backup"
            )
        _check(source / rel, entry["size"], entry["sha256"], "the manifest's")
    for sha, size in blob_list(source):
        _check(located(source / "blobs", sha), size, sha, "its name")


def _check(path: Path, size: int, sha: str, whose: str) -> None:
    if not path.is_file():
        raise BackupError(f"{path} is missing from the backup (listed in its manifest)")
    if path.stat().st_size != size:
        raise BackupError(f"{path} is damaged: {path.stat().st_size} bytes, expected {size}")
    if sha256_of(path)[1] != sha:
        raise BackupError(f"{path} is damaged: its sha256 differs from {whose}")


# -- backup --------------------------------------------------------------------------------


def backup(*, engine: Engine, data_dir: Path, out: Path, say: Say = print) -> dict[str, Any]:
    """Write a backup of the deployment into ``out`` (new or empty); return its manifest.

    The backup holds the blob store's trash (index.blobs) from before its read transaction
    to its end: an original deleted after the snapshot is copied from the trash. A copy
    that finds it gone anyway (its hold went stale while the process was suspended, or a
    server of an older release unlinked it) retries with a new snapshot.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(
            f"{out} is not empty: back up into a new folder (one left by an interrupted "
            f"backup has no {MANIFEST} and can be deleted)"
        )
    with holding_trash(data_dir / "blobs"):
        for _attempt in range(RETRIES):
            out.mkdir(parents=True, exist_ok=True)
            try:
                return _backup_once(engine, data_dir, out, say)
            except _BlobGone as exc:
                say(f"{exc}; starting again from a new snapshot")
            finally:
                if not (out / MANIFEST).exists():  # nothing half-written is left behind
                    _empty(out)
    raise BackupError(
        f"originals were deleted faster than they could be copied ({RETRIES} tries): "
        "back up at a quieter moment"
    )


def _backup_once(engine: Engine, data_dir: Path, out: Path, say: Say) -> dict[str, Any]:
    files = _Files(out)
    tables: dict[str, Any] = {}
    with _point_in_time(engine, data_dir / INDEXES, files, say) as (conn, revision, indexes):
        created_at = datetime.now(UTC).isoformat()
        dumped = _tables(conn)
        sequences = _sequences(conn, {name for name, _, _ in dumped})
        for name, columns, key in dumped:
            rows = _dump_table(conn, name, columns, key, files)
            tables[name] = {"file": f"tables/{name}.jsonl.gz", "rows": rows, "columns": columns}
            if name in sequences:
                tables[name]["sequence"] = sequences[name]
            say(f"{name}: {rows} rows")
        blobs = _copy_blobs(conn, engine, data_dir / "blobs", files)
    say(f"originals: {blobs} files")
    for folder in CACHES:
        for path in sorted(p for p in (data_dir / folder).rglob("*") if is_kept(p)):
            files.copy(path, path.relative_to(data_dir).as_posix())
    body = {
        "format": FORMAT,
        "created_at": created_at,
        "dialect": engine.dialect.name,
        "schema_revision": revision,
        "tables": tables,
        "blobs": blobs,
        "indexes": indexes,
        "files": files.entries,
    }
    _write_manifest(out, body)
    return body


@contextmanager
def _point_in_time(
    engine: Engine, root: Path, files: _Files, say: Say
) -> Iterator[tuple[Connection, str, dict[str, Any]]]:
    """The backup's read transaction, its schema revision and the index snapshots that go
    with its rows (the manifest's ``indexes``, by collection id).

    Each snapshot is copied *before* the transaction's first read: it then reflects changes
    up to its seq, all of them in the rows, and the rows log every change after it (the log
    is pruned only up to a written snapshot), so a restore that loads it and replays the
    log after it holds exactly the rows' items, in the original's trained lists. A snapshot
    read after the rows could hold changes they lack. The copy reads one open file whole,
    so a snapshot renamed over it meanwhile (index.snapshots.write_atomically) leaves the
    copy consistent; its own checksum is checked on the copy. If the server snapshotted
    and pruned between copy and transaction, the copy predates the log: copy again.
    """
    for attempt in range(1, RETRIES + 1):
        copied = _copy_snapshots(root, files)
        with _snapshot(engine) as conn:
            revision = _revision(conn)
            points = index_points(conn)
            if attempt < RETRIES and any(
                h is not None and c in points and h.seq < points[c].pruned_seq
                for c, h in copied.items()
            ):
                say("an index snapshot was replaced during the backup; copying them again")
                continue
            yield conn, revision, _index_entries(points, copied, files, say)
            return


def _copy_snapshots(root: Path, files: _Files) -> dict[int, SnapshotHeader | None]:
    """Copy every collection's snapshot into the backup; their headers (None: unreadable)."""
    for rel in [r for r in files.entries if r.startswith(f"{INDEXES}/")]:
        files.discard(rel)  # an earlier attempt's copy
    copied: dict[int, SnapshotHeader | None] = {}
    for path in sorted(root.glob("*.faiss")) if root.is_dir() else []:
        cid = collection_of(path.name)
        if cid is None:
            continue
        rel = f"{INDEXES}/{path.name}"
        try:
            files.copy(path, rel)
        except FileNotFoundError:
            continue  # dropped with its collection since the listing
        copied[cid] = read_header(files.root / rel)
    return copied


def _index_entries(
    points: dict[int, IndexPoint],
    copied: dict[int, SnapshotHeader | None],
    files: _Files,
    say: Say,
) -> dict[str, Any]:
    """The manifest's word on each collection's index: the snapshot a restore loads, or
    why there is none (the restore then rebuilds it from the rows)."""
    for cid in copied.keys() - points.keys():  # a collection dropped before the rows
        files.discard(f"{INDEXES}/{snapshot_file(cid)}")
    entries: dict[str, Any] = {}
    for cid, point in points.items():
        rel = f"{INDEXES}/{snapshot_file(cid)}"
        header = copied.get(cid)
        why = point.unusable(header) if cid in copied else "no snapshot written yet"
        if why or header is None:
            files.discard(rel)
            entries[str(cid)] = {"collection": point.name, "rebuild": why}
            say(f"index of {point.name}: not copied ({why}); a restore rebuilds it from SQL")
            continue
        entries[str(cid)] = {
            "collection": point.name,
            "file": rel,
            "seq": header.seq,
            "aligner_version": header.aligner_version,
            "epoch": header.epoch,
        }
        say(f"index of {point.name}: snapshot at change {header.seq}")
    return entries


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def is_kept(path: Path) -> bool:
    """A file worth copying: not a folder, not a temp file (their names start with a dot)."""
    return path.is_file() and not path.name.startswith(".")


def _dump_table(
    conn: Connection, name: str, columns: list[list[str]], key: list[str], files: _Files
) -> int:
    rel = f"tables/{name}.jsonl.gz"
    tbl = clause(name, columns)
    stmt = select(*tbl.c).order_by(*(tbl.c[k] for k in key)).execution_options(yield_per=CHUNK)
    count = 0
    with gzip.open(files.target(rel), "wt", encoding="utf-8", compresslevel=4) as f:
        for rows in conn.execute(stmt).partitions():
            for row in rows:
                values = [encode(v, kind) for v, (_, kind) in zip(row, columns, strict=True)]
                f.write(json.dumps(values) + "\n")
                count += 1
    files.add(rel)
    return count


def _copy_blobs(conn: Connection, engine: Engine, root: Path, files: _Files) -> int:
    """Copy the originals of the snapshot's files (images, audio), checking each one's
    sha256; a text's original is its text, which its row holds.

    They are listed in a file of their own (checksummed in the manifest): a file's name is
    its digest, so the manifest stays small however many originals there are.
    """
    stmt = text("SELECT DISTINCT sha256 FROM items WHERE modality <> 'text' ORDER BY sha256")
    count = 0
    with open(files.target(BLOB_LIST), "w", encoding="utf-8") as listing:
        for rows in conn.execute(stmt.execution_options(yield_per=CHUNK)).partitions():
            for (sha,) in rows:
                listing.write(json.dumps([sha, _copy_blob(engine, root, sha, files.root)]) + "\n")
                count += 1
    files.add(BLOB_LIST)
    return count


def _copy_blob(engine: Engine, root: Path, sha: str, out: Path) -> int:
    """Copy one original, from its place or else from the trash (deleted since the snapshot)."""
    target = blob_path(out / "blobs", sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    for source in find(root, sha):
        try:
            size, digest = copy_file(source, target)
            break
        except FileNotFoundError:
            continue
    else:
        _missing_blob(engine, sha, blob_path(root, sha))
    if digest != sha:
        raise BackupError(
            f"original {source} is damaged: its sha256 is {digest}, its name says otherwise; "
            "restore that file from an older backup (or delete its items) and back up again"
        )
    return size


def _missing_blob(engine: Engine, sha: str, source: Path) -> NoReturn:
    """Tell a concurrent delete (retry) from an original lost from the data dir (refuse)."""
    with engine.connect() as conn:
        stmt = text("SELECT external_id FROM items WHERE sha256 = :sha LIMIT 5")
        ids = list(conn.execute(stmt, {"sha": sha}).scalars())
    if not ids:
        raise _BlobGone(f"original {sha} was deleted with its item during the backup")
    raise BackupError(
        f"original {source} is missing from the data dir, yet items {ids} refer to it: "
        "restore it from an older backup (or delete those items) and back up again"
    )
