"""Faults of the machine, not of the request: the database gone, the disk full.

Both are told apart from the errors they resemble: a statement timeout or a locked SQLite
file is an ``OperationalError`` too, yet says nothing about the database being reachable.
"""

from __future__ import annotations

import errno
import logging
import random
import sqlite3
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError

log = logging.getLogger(__name__)

# Postgres SQLSTATEs of a lost or refused connection: class 08, and the server shutting
# down, crashed or still starting (57P01-57P03). 57014 (statement timeout) is not one.
_PG_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")
_PG_DISK_FULL = "53100"
# SQLite's messages for a file it cannot reach at all (not "database is locked").
_SQLITE_UNREACHABLE = ("unable to open database file", "disk i/o error")
_SQLITE_FULL = "database or disk is full"
# SQLite's messages for a lock another connection held past the busy timeout.
_SQLITE_BUSY = ("database is locked", "database table is locked")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


# What the drivers raise themselves: SQLAlchemy wraps them in a DBAPIError, but a raw
# connection (the search's hydration, index/summaries.py) lets them through as they are.
DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


def _driver_error(exc: BaseException) -> BaseException | None:
    if isinstance(exc, DBAPIError):
        return exc.orig
    return exc if isinstance(exc, DRIVER_ERRORS) else None


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached right now."""
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, InterfaceError)
    ):
        return True
    orig = _driver_error(exc)
    if isinstance(orig, sqlite3.Error):
        return any(m in str(orig).lower() for m in _SQLITE_UNREACHABLE)
    if isinstance(orig, psycopg.InterfaceError):
        return True
    if isinstance(orig, psycopg.OperationalError):
        # A connection that failed or broke carries no SQLSTATE; the server's own refusals
        # do (QueryCanceled, a statement timeout, is an OperationalError with 57014).
        state = _sqlstate(orig)
        return state is None or state.startswith(_PG_CONNECTION_STATES)
    return False


def database_busy(exc: BaseException) -> bool:
    """Whether an error means another connection held SQLite's write lock past the busy
    timeout: the database is there, and a later try may get the lock."""
    orig = _driver_error(exc)
    message = str(orig).lower()
    return isinstance(orig, sqlite3.OperationalError) and message.startswith(_SQLITE_BUSY)


def storage_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or the quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    orig = _driver_error(exc)
    if isinstance(orig, sqlite3.Error):
        return _SQLITE_FULL in str(orig).lower()
    return orig is not None and _sqlstate(orig) == _PG_DISK_FULL


def is_fault(exc: BaseException) -> bool:
    """A fault a background loop waits out instead of dying of."""
    return database_unavailable(exc) or database_busy(exc) or storage_full(exc)


class Retrier:
    """Backoff for a loop that must outlive errors, and its log: one line when an outage
    starts and one when it ends, not one per attempt (an hour's outage would flood the log).

    Waits double from ``base`` up to ``cap``, each with up to 50 % jitter, so that every
    process does not knock on a database coming back at the same instant.
    """

    def __init__(self, name: str, *, base: float = 0.5, cap: float = 30.0) -> None:
        self.name, self.base, self.cap = name, base, cap
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure (logged when it is the first); the seconds to wait before retrying."""
        if not self.failures:
            if is_fault(exc):
                log.warning("%s: %s; retrying with backoff", self.name, exc)
            else:
                log.error("%s failed; retrying with backoff", self.name, exc_info=exc)
        self.failures += 1
        wait = min(self.cap, self.base * 2 ** (self.failures - 1))
        return wait * random.uniform(0.5, 1.0)

    def succeeded(self) -> None:
        """Record a success: an outage, if any, is over."""
        if self.failures:
            log.warning("%s recovered after %d failed attempts", self.name, self.failures)
        self.failures = 0


def run_resilient(
    retrier: Retrier | str,
    step: Callable[[], object],
    stop: threading.Event,
    *,
    every: Callable[[], float],
    pause: Callable[[threading.Event, float], bool] | None = None,
) -> None:
    """Call ``step`` every ``every()`` seconds until ``stop``; an error never ends the loop,
    it is retried with backoff (a name: the default :class:`Retrier`'s). ``pause(stop, s)``
    waits instead of ``stop.wait(s)`` (it may end early) and says whether to stop."""
    retrier = Retrier(retrier) if isinstance(retrier, str) else retrier
    wait = every()
    pause = pause or (lambda event, seconds: event.wait(seconds))
    while not pause(stop, wait):
        try:
            step()
        except Exception as exc:  # the loop must outlive any error; Retrier logs it
            wait = retrier.failed(exc)
            continue
        retrier.succeeded()
        wait = every()
