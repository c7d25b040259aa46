"""What ``mmr ingest`` has done so far, shared by its sending threads and its progress line."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.ingest.files import Found


@dataclass
class Failure:
    path: Path
    status: int  # 0: no answer, or the file could not be read here
    code: str
    message: str


@dataclass
class Tally:
    """What happened so far (shared by the sending threads)."""

    ingested: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    files_done: int = 0
    bytes_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, found: Found, failure: Failure | None = None) -> None:
        with self.lock:
            if failure is not None:
                self.failures.append(failure)
            self.files_done += 1
            self.bytes_done += found.size

    def summary(self) -> str:
        return f"ingested {self.ingested}, skipped {self.skipped}, failed {len(self.failures)}"
