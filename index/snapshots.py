"""Index snapshots (invariant 3): temp file, fsync, rename, fsync the directory.

File layout: a magic line, a JSON header line (seq, dim, count, sha256 of the payload), payload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Version 2: ids pack (item, segment); a version-1 file is ignored and the index rebuilt.
MAGIC = b"MMR-INDEX-SNAPSHOT 2\n"


@dataclass(frozen=True)
class IndexSnapshot:
    """A serialised index and the change-log sequence it reflects."""

    seq: int
    dim: int
    payload: bytes
    aligner_version: int = 0  # the heads that made the vectors
    epoch: int = 0  # the collection's index epoch it was built for


def write_snapshot(path: Path, snapshot: IndexSnapshot) -> None:
    """Write atomically and durably: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "seq": snapshot.seq,
        "dim": snapshot.dim,
        "aligner_version": snapshot.aligner_version,
        "epoch": snapshot.epoch,
        "size": len(snapshot.payload),
        "sha256": hashlib.sha256(snapshot.payload).hexdigest(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_atomically(path, tmp, (MAGIC, json.dumps(header).encode() + b"\n", snapshot.payload))


def write_atomically(path: Path, tmp: Path, chunks: Iterable[bytes]) -> None:
    """Write chunks to ``tmp``, fsync, rename it over ``path``, fsync the directory.

    On any failure (a full disk, most often: ENOSPC may surface at the write or only at
    the fsync) the temp file is removed before the error goes on, so that a disk that
    filled up is not kept full by the remains of the writes it refused.
    """
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def read_snapshot(path: Path) -> IndexSnapshot | None:
    """The snapshot at path, or None when it is missing, truncated or corrupt."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        return None
    try:
        header = json.loads(data[len(MAGIC) : header_end])
        seq, dim, size, digest = header["seq"], header["dim"], header["size"], header["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    payload = data[header_end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
        return None
    return IndexSnapshot(
        seq=int(seq),
        dim=int(dim),
        payload=payload,
        aligner_version=int(header.get("aligner_version", 0)),
        epoch=int(header.get("epoch", 0)),
    )


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


def remove_snapshot(path: Path) -> None:
    """Delete a snapshot if present."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
