"""The change log in SQL: every item write appends a row (index/items.py); the indexes of
every process replay it from the sequence their snapshot reflects, and a durable snapshot
lets the rows it covers be pruned, but for those a live process has not applied yet: each
server process reports how far it follows (``report``), and a prune stops below the slowest
one seen within ``REPLICA_LEASE_S``."""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from index.collections import CollectionCache
from index.tables import ChangeRow, CollectionRow, ReplicaPositionRow, utcnow

# A process not heard from for this long is gone (killed, or cut off): pruning stops waiting
# for it. If it comes back behind a pruned log it rebuilds (index.manager).
REPLICA_LEASE_S = 60.0


class ChangeLog:
    """A collection's change log over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session], cache: CollectionCache) -> None:
        self.sessions = sessions
        self.cache = cache

    def last_seq(self, collection_id: int) -> int:
        """The newest change-log sequence of a collection, pruned ones included (0 when none)."""
        with self.sessions() as session:
            stmt = select(func.max(ChangeRow.seq)).where(ChangeRow.collection_id == collection_id)
            newest = int(session.scalar(stmt) or 0)
            pruned = session.scalar(
                select(CollectionRow.changes_pruned_seq).where(CollectionRow.id == collection_id)
            )
        return max(newest, int(pruned or 0))

    def since(
        self, *, collection_id: int, seq: int, skip: Set[int] = frozenset()
    ) -> tuple[set[int], int]:
        """Item keys touched after a sequence (but by the changes ``skip`` names: a process's
        own writes, already in its index), and the newest sequence seen."""
        with self.sessions() as session:
            rows = session.execute(
                select(ChangeRow.seq, ChangeRow.item_pk).where(
                    ChangeRow.collection_id == collection_id, ChangeRow.seq > seq
                )
            ).all()
        newest = max((r[0] for r in rows), default=seq)
        return {int(r[1]) for r in rows if r[0] not in skip}, int(newest)

    def heads(self) -> dict[int, int]:
        """The newest sequence of every collection the log holds changes of, in one query."""
        stmt = select(ChangeRow.collection_id, func.max(ChangeRow.seq)).group_by(
            ChangeRow.collection_id
        )
        with self.sessions() as session:
            return {int(c): int(s) for c, s in session.execute(stmt).all()}

    def pruned_seq(self, collection_id: int) -> int:
        """Up to which sequence the log of a collection was pruned (0: never)."""
        with self.sessions() as session:
            stmt = select(CollectionRow.changes_pruned_seq).where(CollectionRow.id == collection_id)
            return int(session.scalar(stmt) or 0)

    def epoch(self, collection_id: int) -> int | None:
        """The collection's index epoch as SQL holds it now (None: deleted)."""
        with self.sessions() as session:
            stmt = select(CollectionRow.index_epoch).where(CollectionRow.id == collection_id)
            found = session.scalar(stmt)
            return None if found is None else int(found)

    def prune(self, *, collection_id: int, upto_seq: int) -> None:
        """Forget the change log up to a sequence a durable snapshot reflects."""
        with self.sessions.begin() as session:
            session.execute(
                delete(ChangeRow).where(
                    ChangeRow.collection_id == collection_id, ChangeRow.seq <= upto_seq
                )
            )
            row = session.get(CollectionRow, collection_id)
            if row is not None:
                row.changes_pruned_seq = max(row.changes_pruned_seq, upto_seq)
        self.cache.forget()

    # -- how far each process follows ----------------------------------------------------
    def report(self, replica: str, positions: Mapping[int, int]) -> None:
        """Record the position this process's index of each collection reflects."""
        now = utcnow()
        with self.sessions.begin() as session:
            for collection_id, applied in positions.items():
                row = session.get(ReplicaPositionRow, (replica, collection_id))
                if row is None:
                    row = ReplicaPositionRow(replica=replica, collection_id=collection_id)
                    session.add(row)
                row.applied = applied
                row.seen_at = now

    def slowest(self, collection_id: int, *, excluding: str) -> int | None:
        """The lowest position another live process reported for a collection (None: none)."""
        since = utcnow() - timedelta(seconds=REPLICA_LEASE_S)
        stmt = select(func.min(ReplicaPositionRow.applied)).where(
            ReplicaPositionRow.collection_id == collection_id,
            ReplicaPositionRow.replica != excluding,
            ReplicaPositionRow.seen_at >= since,
        )
        with self.sessions() as session:
            found = session.scalar(stmt)
        return None if found is None else int(found)

    def forget_replica(self, replica: str) -> None:
        """A process that stops cleanly takes its positions with it."""
        with self.sessions.begin() as session:
            session.execute(delete(ReplicaPositionRow).where(ReplicaPositionRow.replica == replica))
