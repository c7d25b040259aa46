"""Original bytes, content-addressed by sha256 under the data dir."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from index.snapshots import write_atomically


class BlobStore:
    """Write-once files named by their sha256: ``blobs/ab/cd/abcd...``.

    Files no item refers to are removed. A file is *pinned* from the moment an ingest
    writes it until its SQL row is committed, so that removal never races an ingest of
    the same bytes (which would leave a committed row pointing at nothing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()

    @contextlib.contextmanager
    def pinned(self, data: bytes) -> Iterator[str]:
        """Store bytes and keep them from removal until the block (the SQL commit) ends."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._pins[digest] += 1
        try:
            self.put(data)
            yield digest
        finally:
            with self._lock:
                self._pins[digest] -= 1
                if not self._pins[digest]:
                    del self._pins[digest]

    def remove_unused(self, digests: Iterable[str], in_use: Callable[[set[str]], set[str]]) -> int:
        """Delete the files of these digests that are neither pinned nor referenced in SQL."""
        candidates = set(digests)
        removed = 0
        with self._lock:
            candidates -= set(self._pins)
            for digest in candidates - in_use(candidates) if candidates else ():
                with contextlib.suppress(FileNotFoundError):
                    self.path(digest).unlink()
                    removed += 1
        return removed

    def path(self, sha256: str) -> Path:
        """Where the bytes with this digest live."""
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store bytes durably (before the SQL commit that refers to them); return the digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        write_atomically(target, tmp, (data,))
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored bytes; FileNotFoundError when absent."""
        return self.path(sha256).read_bytes()
