"""What a follower waits on between passes (invariant 8): the follow interval or, on
Postgres, another process committing a change, whichever comes first.

Writers announce each change with ``NOTIFY`` in their transaction (``announce``): Postgres
delivers it only when, and if, the transaction commits. Followers ``LISTEN`` on one
connection of their own; a notification ends their pause early, so a write reaches every
process in about a catch-up's time instead of half the interval. Polling stays the safety
net: a notification lost to a dropped connection only delays a pass to the interval's end.
SQLite has no such signal; its followers poll.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# The one channel of a database: the payload is empty or names the writing process
# (``sender``); a follower checks every collection it holds (a notification from another
# schema or service on the database costs one pass).
CHANNEL = "mmr_changes"
# A follower woken by notifications runs at most this often: a burst of writes costs one pass
# per gap, not one per write.
MIN_GAP_S = 0.02
STOP_CHECK_S = 0.2  # how soon a pause notices that the process is stopping


def announce(session: Session, *, own: bool = False) -> None:
    """Wake every follower once this transaction commits (Postgres; SQLite: nothing).
    ``own``: the writer puts the change in its process's index itself (an item write through
    the index manager), so that process's follower is not woken for it: under a steady
    stream of writes it would otherwise run a pass after every one to find nothing new."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, sender() if own else "")))


_sender: tuple[int, str] | None = None  # (pid, this process's name in notifications)


def sender() -> str:
    """This process's name in the notifications of its own writes: unique per process, made
    again in a forked child (which has an index of its own)."""
    global _sender
    if _sender is None or _sender[0] != os.getpid():
        _sender = (os.getpid(), uuid.uuid4().hex)
    return _sender[1]


class Wakeup:
    """Pauses a follower until the interval ends, a change is announced, or it stops."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url
        self._conninfo = (
            url.set(drivername="postgresql").render_as_string(hide_password=False)
            if url.get_backend_name() == "postgresql"
            else None
        )
        self._conn: psycopg.Connection[Any] | None = None
        self.woken = 0  # passes started by a notification, not by the interval

    def pause(self, stop: threading.Event, seconds: float) -> bool:
        """Wait; True when the process is stopping."""
        if self._conninfo is None:
            return stop.wait(seconds)
        deadline = time.monotonic() + seconds
        try:
            if self._notified(stop, deadline):
                self.woken += 1
                return stop.wait(MIN_GAP_S)
        except psycopg.Error as exc:  # the database is down or the connection dropped
            log.debug("change notifications unavailable (%s); polling", exc)
            self.close()
        return stop.wait(max(0.0, deadline - time.monotonic()))

    def _notified(self, stop: threading.Event, deadline: float) -> bool:
        """Whether another process (or a write this one did not index itself) announced a
        change before the deadline."""
        conn = self._listening()
        mine = sender()
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            got = [n.payload for n in conn.notifies(timeout=min(left, STOP_CHECK_S), stop_after=1)]
            if got:  # and the rest of a burst: one pass covers it
                got += [n.payload for n in conn.notifies(timeout=0)]
            if any(payload != mine for payload in got):
                return True
        return False

    def _listening(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            assert self._conninfo is not None
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
