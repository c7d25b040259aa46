"""Index snapshots (invariant 3): temp file, fsync, rename, fsync the directory.

File layout: a magic line, a JSON header line (seq, dim, count, sha256 of the payload), payload.
A snapshot serves a collection only while SQL still names its aligner version and index
epoch and the change log still holds every change after its seq (:meth:`SnapshotHeader.unusable`);
start-up (index.manager) and backups (index.backup) decide by the same rule.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Version 2: ids pack (item, segment); a version-1 file is ignored and the index rebuilt.
MAGIC = b"MMR-INDEX-SNAPSHOT 2\n"
HEADER_MAX = 4096  # bytes of the JSON header line, at most
CHUNK = 1 << 20


@dataclass(frozen=True)
class SnapshotHeader:
    """What a snapshot says it is: the change-log sequence it reflects, and its space."""

    seq: int
    dim: int
    aligner_version: int = 0  # the heads that made the vectors
    epoch: int = 0  # the collection's index epoch it was built for

    def unusable(
        self, *, pruned_seq: int, aligner_version: int, epoch: int, last_seq: int | None = None
    ) -> str | None:
        """Why this snapshot cannot serve a collection that SQL describes so (None: it can).

        ``last_seq``, when given, is the newest change SQL holds: a snapshot past it holds
        changes the rows do not (a database restored beside a newer data dir).
        """
        if self.seq < pruned_seq:
            return (
                f"its change {self.seq} predates the change log, pruned up to {pruned_seq}: "
                "the changes since it are gone"
            )
        if (self.aligner_version, self.epoch) != (aligner_version, epoch):
            return (
                f"it was built for aligner v{self.aligner_version}, index epoch {self.epoch}; "
                f"the collection serves v{aligner_version}, epoch {epoch}"
            )
        if last_seq is not None and self.seq > last_seq:
            return f"its change {self.seq} is newer than the rows, whose last is {last_seq}"
        return None


@dataclass(frozen=True)
class IndexSnapshot:
    """A serialised index and the change-log sequence it reflects."""

    seq: int
    dim: int
    payload: bytes | memoryview  # read_snapshot's: a view of the mapped file
    aligner_version: int = 0  # the heads that made the vectors
    epoch: int = 0  # the collection's index epoch it was built for

    @property
    def header(self) -> SnapshotHeader:
        """The snapshot less its payload."""
        return SnapshotHeader(self.seq, self.dim, self.aligner_version, self.epoch)


def _fields(header: SnapshotHeader, size: int, sha256: str) -> bytes:
    """A snapshot's header line, less its newline: what it is of, and its payload's check."""
    fields = {
        "seq": header.seq,
        "dim": header.dim,
        "aligner_version": header.aligner_version,
        "epoch": header.epoch,
        "size": size,
        "sha256": sha256,
    }
    return json.dumps(fields).encode()


def write_snapshot(path: Path, snapshot: IndexSnapshot) -> None:
    """Write atomically and durably: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(snapshot.payload).hexdigest()
    line = _fields(snapshot.header, len(snapshot.payload), digest) + b"\n"
    write_atomically(path, temp_file(path, os.getpid()), (MAGIC, line, snapshot.payload))


def write_snapshot_chunks(
    path: Path, header: SnapshotHeader, chunks: Iterable[bytes | memoryview]
) -> None:
    """:func:`write_snapshot` of a payload given in pieces, never held whole (an on-disk
    index's lists): the header line is written padded, then over again once the payload's
    size and sha256 are known (JSON ignores the trailing spaces). Atomic and durable alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path, os.getpid())
    width = HEADER_MAX - 1
    sha, size = hashlib.sha256(), [0]

    def counted() -> Iterator[bytes | memoryview]:
        yield MAGIC + b" " * width + b"\n"
        for chunk in chunks:
            sha.update(chunk)
            size[0] += len(chunk)
            yield chunk

    def header_line(f: BinaryIO) -> None:
        f.seek(len(MAGIC))
        f.write(_fields(header, size[0], sha.hexdigest()).ljust(width))

    write_atomically(path, tmp, counted(), finish=header_line)


def temp_file(path: Path, pid: int) -> Path:
    """Where process ``pid`` writes the snapshot ``path`` before renaming it into place
    (``remove_stale_temp`` reads the pid back)."""
    return path.with_name(f".{path.name}.{pid}.tmp")


def write_atomically(
    path: Path,
    tmp: Path,
    chunks: Iterable[bytes | memoryview],
    *,
    finish: Callable[[BinaryIO], None] | None = None,
) -> None:
    """Write chunks to ``tmp`` (then ``finish`` it), fsync, rename it over ``path``, fsync
    the directory.

    On any failure (a full disk, most often: ENOSPC may surface at the write or only at
    the fsync) the temp file is removed before the error goes on, so that a disk that
    filled up is not kept full by the remains of the writes it refused.
    """
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            if finish is not None:
                finish(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def read_snapshot(path: Path) -> IndexSnapshot | None:
    """The snapshot at path, or None when it is missing, truncated or corrupt.

    Its payload is a read-only view of the file mapped in memory, not a copy: an index
    loaded from it is held once, not three times over (the file read, the payload cut from
    it, the index), and the mapped pages go when the snapshot is dropped."""
    try:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    end = mapped.find(b"\n", len(MAGIC), len(MAGIC) + HEADER_MAX)
    header = _header(mapped[: end + 1]) if end >= 0 else None
    if header is None:
        mapped.close()
        return None
    found, size, digest = header
    payload = memoryview(mapped)[end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
        payload.release()
        mapped.close()
        return None
    if hasattr(mmap, "MADV_DONTNEED"):  # the check read every page: unmap them from us
        mapped.madvise(mmap.MADV_DONTNEED)  # (the page cache keeps them; reads map again)
    return IndexSnapshot(found.seq, found.dim, payload, found.aligner_version, found.epoch)


def read_header(path: Path) -> SnapshotHeader | None:
    """The header of the snapshot at path, its payload checked against it in chunks (a
    snapshot is never held whole); None when it is missing, truncated or corrupt."""
    try:
        with open(path, "rb") as f:
            header = _header(f.readline(len(MAGIC)) + f.readline(HEADER_MAX))
            if header is None:
                return None
            found, size, digest = header
            sha = hashlib.sha256()
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                size -= len(chunk)
    except OSError:
        return None
    return found if size == 0 and sha.hexdigest() == digest else None


def peek_header(path: Path) -> SnapshotHeader | None:
    """The header of the snapshot at path, its payload not read (what a writer compares its
    own snapshot with); None when there is none or it is not one."""
    try:
        with open(path, "rb") as f:
            header = _header(f.readline(len(MAGIC)) + f.readline(HEADER_MAX))
    except OSError:
        return None
    return None if header is None else header[0]


def _header(head: bytes) -> tuple[SnapshotHeader, int, str] | None:
    """The header, payload size and payload sha256 of a snapshot's first two lines."""
    if not head.startswith(MAGIC) or not head.endswith(b"\n"):
        return None
    try:
        fields = json.loads(head[len(MAGIC) :])
        found = SnapshotHeader(
            seq=int(fields["seq"]),
            dim=int(fields["dim"]),
            aligner_version=int(fields.get("aligner_version", 0)),
            epoch=int(fields.get("epoch", 0)),
        )
        return found, int(fields["size"]), str(fields["sha256"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_SYNCFS = getattr(_LIBC, "syncfs", None)


def can_sync_filesystem() -> bool:
    """Whether ``sync_filesystem`` is there (Linux)."""
    return _SYNCFS is not None


def sync_filesystem(path: Path) -> None:
    """Flush every write of the file system holding ``path`` to disk (Linux ``syncfs``;
    since Linux 5.8 it reports a write that failed since the file system was opened)."""
    assert _SYNCFS is not None, "sync_filesystem needs Linux (see can_sync_filesystem)"
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            errno_ = ctypes.get_errno()
            raise OSError(errno_, os.strerror(errno_), str(path))
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename in this directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp(directory: Path) -> int:
    """Delete the temp files that processes no longer running left here (a kill mid-write);
    how many. A live process's file is its write in progress and stays."""
    removed = 0
    for tmp in directory.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def snapshot_file(collection_id: int) -> str:
    """The name of a collection's snapshot file in the indexes folder."""
    return f"collection-{collection_id}.faiss"


def collection_of(name: str) -> int | None:
    """The collection whose snapshot file this is (None: another file)."""
    stem = name.removeprefix("collection-").removesuffix(".faiss")
    return int(stem) if stem.isdigit() and name == snapshot_file(int(stem)) else None


def remove_snapshot(path: Path) -> None:
    """Delete a snapshot if present."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
