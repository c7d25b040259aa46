"""Invariant 8 at the storage layer: indexes of separate processes (here: separate managers,
stores and engines over one database, SQLite then Postgres) follow SQL's change log, miss no
write however transactions commit, and survive another process's snapshot pruning the log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

import index.changes as changes_module
import index.manager as manager_module
from index.db import make_engine, make_sessionmaker
from index.items import ItemDraft
from index.manager import IndexManager, LiveIndex
from index.snapshots import peek_header
from index.stores import Stores
from tests.factories import item_draft, new_collection
from tests.index.projectors import Identity
from tests.postgres_gate import POSTGRES


@dataclass
class Process:
    """What one server process holds: its own engine, stores, manager and snapshot folder."""

    stores: Stores
    indexes: IndexManager[Identity]

    def live(self, name: str = "c") -> LiveIndex[Identity]:
        return self.indexes.get(self.stores.collections.get(name))

    def held(self, name: str = "c") -> set[int]:
        return {int(pk) for pk in self.live(name).index.ids()}

    def write(self, external_id: str, value: float = 0.5) -> int:
        """An upsert as the app makes it: SQL and this process's index under the writer lock."""
        row = self.stores.collections.get("c")
        live = self.indexes.get(row)
        draft = item_draft(external_id)
        draft.aligner_version = row.aligner_version
        vector = np.full((1, 4), value, dtype=np.float32)
        draft = ItemDraft(**{**draft.__dict__, "feature": vector, "vector": vector})
        with self.indexes.writing(live) as index:
            done = self.stores.items.upsert(collection_id=row.id, draft=draft)
            index.upsert(np.array([done.row.pk]), vector, np.array([1]))
            live.wrote(done.seq, after=done.after)
        return done.row.pk

    def delete(self, external_id: str) -> None:
        row = self.stores.collections.get("c")
        live = self.indexes.get(row)
        with self.indexes.writing(live) as index:
            gone = self.stores.items.delete(collection_id=row.id, external_id=external_id)
            index.remove(np.array([gone.row.pk]))
            live.wrote(gone.seq)


@pytest.fixture
def processes(database_url: str, stores: Stores, tmp_path: Path) -> Iterator[list[Process]]:
    """Two processes over the database ``stores`` migrated, ``new_collection`` in it."""
    new_collection(stores)
    engines, made = [], []
    for n in range(2):
        engine = make_engine(database_url)
        engines.append(engine)
        own = Stores.over(make_sessionmaker(engine))
        manager = IndexManager(
            collections=own.collections,
            items=own.items,
            changes=own.changes,
            aligner_of=lambda row: Identity(row.aligner_version),
            root=tmp_path / f"indexes-{n}",
            replica="ab"[n],
        )
        manager.load_all()
        made.append(Process(own, manager))
    yield made
    for engine in engines:
        engine.dispose()


def sql_pks(stores: Stores) -> set[int]:
    row = stores.collections.get("c")
    return {r.pk for r in stores.items.page(collection_id=row.id, after_pk=0, limit=10_000)}


def test_writes_through_one_process_reach_the_other_when_it_follows(
    processes: list[Process],
) -> None:
    a, b = processes
    x = a.write("x")
    assert x in a.held() and x not in b.held()  # the writer reads its own write at once
    b.indexes.follow_all()
    assert x in b.held()
    b.delete("x")
    y = b.write("y")
    a.indexes.follow_all()
    assert a.held() == b.held() == sql_pks(a.stores) == {y}


def test_a_process_passes_over_its_own_writes(processes: list[Process]) -> None:
    """Its writes are in its index already: applying them again would leave dead vectors."""
    a, _ = processes
    a.write("x")
    a.write("x", 0.25)  # a replace: one dead vector
    live = a.live()
    dead = live.index.deleted
    a.indexes.follow_all()
    assert live.index.deleted == dead
    assert live.own == set() and live.applied == a.stores.changes.last_seq(live.collection_id)


def test_own_writes_move_the_position_when_nothing_came_between(
    processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a stream of its own writes, a process's follower has nothing to read back."""
    a, _ = processes
    for n in range(3):
        a.write(f"x{n}")
    live = a.live()
    assert live.own == set() and live.applied == a.stores.changes.last_seq(live.collection_id)
    read: list[int] = []
    since = a.stores.changes.since
    monkeypatch.setattr(
        a.stores.changes, "since", lambda **kw: read.append(kw["seq"]) or since(**kw)
    )
    a.indexes.follow_all()
    assert read == []


def test_own_writes_leave_the_lag_clock_to_the_follower(processes: list[Process]) -> None:
    """A write says nothing of the aligner or epoch SQL names: only a follower's pass that
    found the index matching SQL restarts the replication lag's clock."""
    a, _ = processes
    a.write("x")
    live = a.live()
    live.caught_up = 0.0  # long ago
    a.write("y")
    assert live.caught_up == 0.0 and live.own == set()
    a.indexes.follow_all()
    assert live.caught_up > 0.0


def test_a_write_of_another_process_between_keeps_the_position_until_it_is_read(
    processes: list[Process],
) -> None:
    """B's write came between two of A's: A's position may not pass it unread."""
    a, b = processes
    a.write("x")
    y = b.write("y")
    z = a.write("z")
    live = a.live()
    assert y not in a.held()
    assert live.applied < a.stores.changes.last_seq(live.collection_id)
    a.indexes.follow_all()
    assert a.held() == {
        a.stores.items.pks_of(collection_id=live.collection_id, external_ids=["x"])["x"],
        y,
        z,
    }
    assert live.applied == a.stores.changes.last_seq(live.collection_id)


def test_a_write_after_a_prune_past_the_position_keeps_it(processes: list[Process]) -> None:
    """B's snapshot pruned the log past A's position: A's next write may not jump the gap
    (A must rebuild to learn what the pruned changes held)."""
    a, b = processes
    a.write("x")
    y = b.write("y")
    b.indexes.snapshot(b.live())  # prunes the log up to B's position (A's is behind)
    a.write("z")
    live = a.live()
    assert y not in a.held()
    assert live.applied < a.stores.changes.last_seq(live.collection_id)
    a.indexes.follow_all()
    assert y in a.held()


def test_a_snapshot_reflects_what_its_process_applied_not_the_logs_head(
    processes: list[Process], tmp_path: Path
) -> None:
    """A's snapshot may not claim B's write before A applied it: a restart from it would
    never replay that write."""
    a, b = processes
    b.write("from-b")
    a.write("from-a")
    live = a.live()
    a.indexes.snapshot(live)  # catches up first: B's write is in the snapshot's index
    restarted = IndexManager(
        collections=a.stores.collections,
        items=a.stores.items,
        changes=a.stores.changes,
        aligner_of=lambda row: Identity(row.aligner_version),
        root=a.indexes.root,
    )
    restarted.load_all()
    row = a.stores.collections.get("c")
    assert {int(pk) for pk in restarted.get(row).index.ids()} == sql_pks(a.stores)
    assert len(sql_pks(a.stores)) == 2


def test_a_log_pruned_past_a_process_makes_it_rebuild(processes: list[Process]) -> None:
    a, b = processes
    a.write("one")
    b.delete("one")
    b.write("two")
    b.indexes.snapshot(b.live())  # prunes the log past A's position
    assert b.stores.changes.pruned_seq(b.live().collection_id) > a.live().applied
    a.indexes.follow_all()
    assert a.held() == sql_pks(a.stores) == b.held()


def test_a_collection_another_process_deleted_is_forgotten(processes: list[Process]) -> None:
    a, b = processes
    a.write("x")
    b.indexes.follow_all()
    row = b.stores.collections.get("c")
    a.stores.collections.delete(row.id)
    b.indexes.follow_all()
    assert row.id not in b.indexes._live


@pytest.mark.parametrize("database_url", [POSTGRES], indirect=True)
def test_a_write_that_commits_late_is_not_skipped(processes: list[Process]) -> None:
    """Postgres draws sequences in call order and commits in any: a write that drew its seq
    first and commits last must still reach the follower. The writer that comes second
    waits for the first one's commit (the collection's row lock), so it cannot commit first."""
    a, b = processes
    held, go = threading.Event(), threading.Event()

    @event.listens_for(a.stores.engine, "after_cursor_execute")
    def hold(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        drew = "INSERT INTO CHANGES" in statement.upper()  # alone, or in a WITH
        if drew and threading.current_thread().name == "late" and not held.is_set():
            held.set()  # this write has drawn its seq and not committed
            go.wait(10)

    late = threading.Thread(target=a.write, args=("late",), name="late")
    late.start()
    assert held.wait(10)
    early = threading.Thread(target=b.write, args=("early",))
    early.start()
    early.join(1.0)
    blocked = early.is_alive()  # waits on the row lock, before drawing a seq
    b.indexes.follow_all()  # reads the log while "late" is open
    go.set()
    late.join(10)
    early.join(10)
    event.remove(a.stores.engine, "after_cursor_execute", hold)
    assert blocked, "the second writer committed while the first held its seq"
    b.indexes.follow_all()
    assert b.held() == sql_pks(b.stores) and len(sql_pks(b.stores)) == 2


def test_a_prune_keeps_what_a_live_process_has_not_applied(
    processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B reported its position and then fell behind A's writes: A's snapshot prunes no
    further than B's position, so B catches up by replaying, not by a rebuild."""
    a, b = processes
    monkeypatch.setattr(manager_module, "REPORT_EVERY_S", 0.0)
    b.live(), a.write("first")
    b.indexes.follow_all()  # B applied "first" and says so
    position = b.live().applied
    for n in range(5):
        a.write(f"more-{n}")
    a.indexes.follow_all()
    a.indexes.snapshot(a.live())
    assert a.stores.changes.pruned_seq(a.live().collection_id) == position

    def no_rebuild(*_: object) -> None:
        raise AssertionError("B rebuilt: the prune took changes it had not applied")

    monkeypatch.setattr(b.indexes, "_rebuild", no_rebuild)
    b.indexes.follow_all()
    assert b.held() == sql_pks(b.stores) and len(sql_pks(b.stores)) == 6


def test_a_process_not_heard_from_within_the_lease_holds_no_prune_back(
    processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = processes
    monkeypatch.setattr(manager_module, "REPORT_EVERY_S", 0.0)
    b.live()
    b.indexes.follow_all()  # B reports position 0, then goes silent
    a.write("x")
    monkeypatch.setattr(changes_module, "REPLICA_LEASE_S", 0.0)
    a.indexes.snapshot(a.live())
    assert a.stores.changes.pruned_seq(a.live().collection_id) == a.live().applied > 0


def test_a_stopped_process_takes_its_positions_with_it(
    processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = processes
    monkeypatch.setattr(manager_module, "REPORT_EVERY_S", 0.0)
    b.live()
    b.indexes.follow_all()
    cid = b.live().collection_id
    assert a.stores.changes.slowest(cid, excluding="a") == 0
    b.indexes.leave()
    assert a.stores.changes.slowest(cid, excluding="a") is None


def test_an_older_snapshot_does_not_replace_a_newer_one_in_a_shared_folder(
    processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes sharing ``indexes/``: one far behind must not put back an older snapshot
    (the next start would find it older than the pruned log and rebuild)."""
    a, b = processes
    b.indexes.root = a.indexes.root
    b.live()
    a.write("x")
    a.indexes.snapshot(a.live())
    newer = peek_header(a.indexes.snapshot_path(a.live().collection_id))
    assert newer is not None and newer.seq > 0
    monkeypatch.setattr(b.indexes, "_caught_up", lambda live, row: True)  # B lags behind
    b.live().dirty = 1
    b.indexes.snapshot(b.live())
    kept = peek_header(b.indexes.snapshot_path(b.live().collection_id))
    assert kept == newer
