"""``mmr ingest``'s progress: one line rewritten in place on a terminal, a plain line every
``PLAIN_EVERY_S`` otherwise (a log file, CI)."""

from __future__ import annotations

import threading
import time
from typing import IO, Any

from app.ingest.tally import Tally

TTY_EVERY_S = 0.25
PLAIN_EVERY_S = 10.0


class Progress:
    """Reports a :class:`Tally` against the totals from a thread of its own."""

    def __init__(self, files: int, size: int, tally: Tally, err: IO[str]) -> None:
        self.files, self.size, self.tally, self.err = files, size, tally, err
        self.tty = err.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmr-ingest-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._show(final=True)

    def _run(self) -> None:
        while not self._stop.wait(TTY_EVERY_S if self.tty else PLAIN_EVERY_S):
            self._show()

    def line(self) -> str:
        t = self.tally
        elapsed = max(time.monotonic() - self._started, 1e-6)
        with t.lock:
            files, size, failed = t.files_done, t.bytes_done, len(t.failures)
        rate = size / elapsed
        left = (self.size - size) / rate if rate > 0 else None
        eta = "-" if left is None else _duration(left)
        share = 100.0 * files / self.files if self.files else 100.0
        return (
            f"{files}/{self.files} files ({share:.1f}%) · {files / elapsed:.1f} files/s · "
            f"{rate / 1e6:.1f} MB/s · ETA {eta} · failed {failed}"
        )

    def _show(self, *, final: bool = False) -> None:
        if self.tty:
            end = "\n" if final else ""
            self.err.write(f"\r\x1b[2K{self.line()}{end}")
        elif not final or self.files:
            self.err.write(self.line() + "\n")
        self.err.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
