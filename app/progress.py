"""Progress of a long command on stderr: one line rewritten in place on a terminal, a plain
line now and then otherwise (a log file, CI), so a log holds a few lines, not thousands.

``mmr ingest`` shows its tally through :class:`Display` (app.ingest.progress);
``train-mini``, ``eval``, ``world`` and ``bootstrap-audio`` report ``(stage, done, total)``
to a :class:`Stages`, which the code in models/ calls without knowing where it goes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

TTY_EVERY_S = 0.25
PLAIN_EVERY_S = 10.0
BAR_WIDTH = 24


class Display:
    """Shows a line of progress on ``err``: in place on a terminal, appended otherwise."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.tty = err.isatty()
        self.every_s = TTY_EVERY_S if self.tty else PLAIN_EVERY_S  # between two lines

    def show(self, line: str, *, final: bool = False) -> None:
        """Show ``line``; ``final`` ends the line a terminal rewrote."""
        if self.tty:
            self.err.write(f"\r\x1b[2K{line}{chr(10) if final else ''}")
        else:
            self.err.write(line + "\n")
        self.err.flush()


class Stages:
    """Progress of a command that works through stages of counted steps, reported as
    ``stages(stage, done, total)``. On a terminal a bar per stage; otherwise a stage's first
    report, one every ``PLAIN_EVERY_S`` and its last. A stage ends when ``done`` reaches
    ``total``, when another stage begins, or at ``close()`` (one cut short: early stop)."""

    def __init__(
        self, err: IO[str] | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.display = Display(err or sys.stderr)
        self.clock = clock
        self._stage: str | None = None
        self._done, self._total = 0, 0
        self._started = self._shown = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage != self._stage:
            self.close()
            self._stage, self._started, self._shown = stage, now, -math.inf
        self._done, self._total = done, total
        if done >= total:
            self.close()
        elif now - self._shown >= self.display.every_s:
            self._shown = now
            self.display.show(self.line(now))

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def say(self, line: str) -> None:
        """Print ``line`` on stdout without tearing a terminal's bar (drawn again below it)."""
        showing = self.display.tty and self._stage is not None
        if showing:
            self.display.show("")
        print(line, flush=True)
        if showing:
            self.display.show(self.line(self.clock()))

    def close(self) -> None:
        """End the current stage with its last line."""
        if self._stage is not None:
            self.display.show(self.line(self.clock()), final=True)
            self._stage = None

    def line(self, now: float) -> str:
        """``stage [####----] 12/40 (30%) · 0m03s · ETA 0m07s`` (the bar on a terminal)."""
        done, total = self._done, self._total
        share = min(done / total, 1.0) if total > 0 else 1.0
        elapsed = now - self._started
        head = f"{self._stage}:"
        if self.display.tty:
            filled = round(BAR_WIDTH * share)
            head += " [" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"
        line = f"{head} {done}/{total} ({100 * share:.0f}%) · {duration(elapsed)}"
        if 0 < done < total:
            line += f" · ETA {duration(elapsed / done * (total - done))}"
        return line


def duration(seconds: float) -> str:
    """``1h05m``, ``3m07s``, ``0m12s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
