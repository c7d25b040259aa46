"""Bytes of decoded media, bounded per request and per process.

A 62 KB PNG can decode to 256 MB and a 50 MB upload can hold hundreds of files, so the
upload limit says nothing about memory. Two budgets do, both checked before a decode starts
(from what the header says it will take) and held to what it actually takes:

- :class:`DecodeBudget`, one per process: the bytes decoding holds at once, both the peak
  of each decode in progress and the decoded media that requests keep until their forward.
  A decode reserves its peak and waits briefly when the budget is full, then gives up with
  ``Overloaded`` (429: retry shortly). What it keeps stays reserved until the kept object is
  garbage collected, however long its request lasts.
- :class:`RequestBudget`, one per request: the bytes its decoded inputs keep, together.
  Over it the request can never succeed as sent, so it gets ``MediaTooLargeError`` (413).
"""

from __future__ import annotations

import threading
import weakref

from models.errors import MediaTooLargeError, Overloaded

MB = 1024 * 1024


class DecodeBudget:
    """Bytes of decoded media the process holds at once, at most ``capacity``."""

    def __init__(self, capacity: int, *, wait_s: float = 2.0, setting: str = "") -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self.setting = setting  # named in messages: what an operator would raise
        self._used = 0
        # Reentrant: a finaliser may release while this thread holds the lock (a garbage
        # collection that runs inside _take).
        self._cond = threading.Condition(threading.RLock())

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        return self._used

    def _take(self, nbytes: int, total: int, what: str) -> None:
        """Take ``nbytes`` more for a decode that then holds ``total``: 413 when that could
        never fit, else wait for room, 429 when none comes in time."""
        if total > self.capacity:
            raise MediaTooLargeError(
                f"decoding {what} takes about {_mb(total)}, more than the {_mb(self.capacity)} "
                f"this server decodes at once{_named(self.setting)}; send a smaller file"
            )
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._used + nbytes <= self.capacity, timeout=self.wait_s
            ):
                raise Overloaded(
                    f"the server is decoding as much media as it may hold at once "
                    f"({_mb(self.capacity)}{_named(self.setting)}); retry shortly"
                )
            self._used += nbytes

    def try_take(self, nbytes: int) -> bool:
        """Take ``nbytes`` if they fit now, else nothing: for a caller that must not block
        its thread while it waits (an event loop polls; ``app.limits`` budgets request
        bodies with this class)."""
        with self._cond:
            if self._used + nbytes > self.capacity:
                return False
            self._used += nbytes
            return True

    def give_back(self, nbytes: int) -> None:
        """Give back bytes taken with :meth:`try_take`."""
        self._give_back(nbytes)

    def _give_back(self, nbytes: int) -> None:
        with self._cond:
            self._used -= nbytes
            self._cond.notify_all()


class RequestBudget:
    """Bytes the decoded inputs of one request keep, at most ``capacity`` together; each
    decode also reserves its peak in the process's ``DecodeBudget``. It also carries the
    moment the request's timed decodes (videos) must all end by, set by the first of them."""

    def __init__(self, process: DecodeBudget, capacity: int, *, setting: str = "") -> None:
        self.process = process
        self.capacity = capacity
        self.setting = setting
        self.used = 0
        self.inputs = 0
        self.decode_until: float | None = None  # time.monotonic() seconds

    def reserve(self, peak: int, kept: int, what: str) -> Reservation:
        """Before decoding ``what``: count the ``kept`` bytes it will hold against this
        request (413 over the budget), then reserve its ``peak`` in the process's budget
        (413 when it could never fit there, 429 when no room comes in time)."""
        self._charge(kept, what)
        try:
            self.process._take(peak, peak, what)
        except BaseException:
            self._refund(kept)
            raise
        return Reservation(self, peak, kept)

    def _charge(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.capacity:
            raise MediaTooLargeError(
                f"{what} decodes to {_mb(nbytes)}; with the {self.inputs} input(s) before it "
                f"this request would hold {_mb(self.used + nbytes)} of decoded media, over the "
                f"{_mb(self.capacity)} one request may hold{_named(self.setting)}; send fewer "
                "or smaller files per request"
            )
        self.used += nbytes
        self.inputs += 1

    def _refund(self, nbytes: int) -> None:
        self.used -= nbytes
        self.inputs -= 1


class Reservation:
    """One decode's bytes in both budgets: the process's (its peak, resized as the decode
    learns what it takes) and the request's (what it keeps). Use as a context manager: a
    decode that fails gives everything back."""

    def __init__(self, request: RequestBudget, peak: int, kept: int) -> None:
        self._request = request
        self._process = request.process
        self.nbytes = peak  # held in the process's budget
        self.kept = kept  # counted in the request's
        self._released = False

    def resize(self, nbytes: int, what: str) -> None:
        """Hold ``nbytes`` in the process's budget from now on: less frees room at once,
        more may wait or raise as reserving does."""
        if nbytes > self.nbytes:
            self._process._take(nbytes - self.nbytes, nbytes, what)
        else:
            self._process._give_back(self.nbytes - nbytes)
        self.nbytes = nbytes

    def keep(self, obj: object, nbytes: int, what: str) -> None:
        """The decode is done and ``obj`` holds ``nbytes``: count exactly that against the
        request, and hold it in the process's budget for as long as ``obj`` lives."""
        if nbytes > self.kept:
            self._request._charge(nbytes - self.kept, what)
            self._request.inputs -= 1  # the same input, counted once
        else:
            self._request.used -= self.kept - nbytes
        self.kept = nbytes
        self.resize(nbytes, what)
        weakref.finalize(obj, self.release)

    def release(self) -> None:
        """Give the process's bytes back (once; later calls do nothing)."""
        if not self._released:
            self._released = True
            self._process._give_back(self.nbytes)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:  # a failed decode keeps nothing
            self.release()
            self._request._refund(self.kept)


def _named(setting: str) -> str:
    return f" ({setting})" if setting else ""


def _mb(nbytes: int) -> str:
    return f"{nbytes / MB:.0f} MB" if nbytes >= 10 * MB else f"{nbytes / MB:.1f} MB"
