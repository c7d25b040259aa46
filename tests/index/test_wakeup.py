"""A follower's pause (index/wakeup.py): on Postgres a committed write ends it early, a rolled
back one does not; SQLite, and Postgres out of reach, fall back to the interval."""

from __future__ import annotations

import os
import threading
import time

import pytest

from index import wakeup as wakeup_module
from index.db import make_engine
from index.stores import Stores
from index.wakeup import Wakeup, announce
from tests.factories import item_draft, new_collection

LONG_S = 8.0  # a pause that a notification must cut short: well past any loaded machine's delay


def paused_for(wakeup: Wakeup, seconds: float, stop: threading.Event | None = None) -> float:
    started = time.monotonic()
    assert not wakeup.pause(stop or threading.Event(), seconds)
    return time.monotonic() - started


def later(seconds: float, action: object) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()  # type: ignore[operator]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_committed_write_ends_the_pause_on_postgres_only(stores: Stores) -> None:
    row = new_collection(stores)
    wakeup = Wakeup(stores.engine)
    try:
        wakeup.pause(threading.Event(), 0.01)  # listening before the write
        write = later(0.3, lambda: stores.items.upsert(collection_id=row.id, draft=item_draft("a")))
        waited = paused_for(wakeup, LONG_S if stores.engine.dialect.name == "postgresql" else 1.0)
        write.join()
    finally:
        wakeup.close()
    if stores.engine.dialect.name == "postgresql":
        assert waited < LONG_S / 2 and wakeup.woken == 1
    else:
        assert waited >= 1.0 and wakeup.woken == 0  # SQLite: the interval, always


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_rolled_back_write_wakes_no_one(stores: Stores) -> None:
    wakeup = Wakeup(stores.engine)
    try:
        wakeup.pause(threading.Event(), 0.01)

        def roll_back() -> None:
            with stores.sessions() as session, session.begin():
                announce(session)
                session.rollback()

        write = later(0.1, roll_back)
        waited = paused_for(wakeup, 1.0)
        write.join()
    finally:
        wakeup.close()
    assert waited >= 1.0 and wakeup.woken == 0


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_write_this_process_indexed_itself_wakes_only_the_others(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item write through this process's index announces its sender: this process's
    follower sleeps on, another process's (another sender) wakes."""
    row = new_collection(stores)
    wakeup = Wakeup(stores.engine)
    try:
        wakeup.pause(threading.Event(), 0.01)
        own = later(
            0.1,
            lambda: stores.items.upsert_many(
                collection_id=row.id, drafts=[item_draft("a")], own=True
            ),
        )
        assert paused_for(wakeup, 1.0) >= 1.0 and wakeup.woken == 0
        own.join()
        deleted = later(
            0.1, lambda: stores.items.delete(collection_id=row.id, external_id="a", own=True)
        )
        assert paused_for(wakeup, 1.0) >= 1.0 and wakeup.woken == 0
        deleted.join()

        # The same write as another process sends it: under a sender that is not ours
        # (the follower took its own name when its pause began).
        def as_another_process() -> None:
            monkeypatch.setattr(wakeup_module, "_sender", (os.getpid(), "another process"))
            stores.items.upsert_many(collection_id=row.id, drafts=[item_draft("b")], own=True)

        theirs = later(0.3, as_another_process)
        assert paused_for(wakeup, LONG_S) < LONG_S / 2 and wakeup.woken == 1
        theirs.join()
    finally:
        wakeup.close()


def test_stopping_ends_the_pause(stores: Stores) -> None:
    wakeup = Wakeup(stores.engine)
    stop = threading.Event()
    try:
        setter = later(0.2, stop.set)
        started = time.monotonic()
        assert wakeup.pause(stop, LONG_S)
        setter.join()
    finally:
        wakeup.close()
    assert time.monotonic() - started < LONG_S / 2


def test_postgres_out_of_reach_falls_back_to_the_interval() -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    wakeup = Wakeup(unreachable)
    assert 0.5 <= paused_for(wakeup, 0.5) < LONG_S
    assert wakeup.woken == 0
