"""``mmr ingest``'s progress: one line rewritten in place on a terminal, a plain line every
``PLAIN_EVERY_S`` otherwise (a log file, CI), through app.progress's display."""

from __future__ import annotations

import threading
import time
from typing import IO, Any

from app.ingest.tally import Tally
from app.progress import Display, duration


class Progress:
    """Reports a :class:`Tally` against the totals from a thread of its own."""

    def __init__(self, files: int, size: int, tally: Tally, err: IO[str]) -> None:
        self.files, self.size, self.tally = files, size, tally
        self.display = Display(err)
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
        while not self._stop.wait(self.display.every_s):
            self._show()

    def line(self) -> str:
        t = self.tally
        elapsed = max(time.monotonic() - self._started, 1e-6)
        with t.lock:
            files, size, failed = t.files_done, t.bytes_done, len(t.failures)
        rate = size / elapsed
        left = (self.size - size) / rate if rate > 0 else None
        eta = "-" if left is None else duration(left)
        share = 100.0 * files / self.files if self.files else 100.0
        return (
            f"{files}/{self.files} files ({share:.1f}%) · {files / elapsed:.1f} files/s · "
            f"{rate / 1e6:.1f} MB/s · ETA {eta} · failed {failed}"
        )

    def _show(self, *, final: bool = False) -> None:
        if final and not self.files and not self.display.tty:
            return  # nothing was found: the summary line says so
        self.display.show(self.line(), final=final)
