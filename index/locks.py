"""A readers-writer lock: searches share, writers and swaps are exclusive (invariant 5)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WouldBlock(Exception):
    """A caller that asked not to wait would have: a writer holds or awaits the lock, or
    (a search) the work needs more than the first pass it was sized for."""


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the lock shared; without ``wait``, raise WouldBlock rather than wait for a
        writer (a caller that must not block, like a search on the event loop)."""
        with self._cond:
            while self._writer or self._writers_waiting:
                if not wait:
                    raise WouldBlock
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively."""
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
