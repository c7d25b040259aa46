"""The change log in SQL: every item write appends a row (index/items.py); the indexes of
every process replay it from the sequence their snapshot reflects, and a durable snapshot
lets the rows it covers be pruned."""

from __future__ import annotations

from collections.abc import Set

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from index.collections import CollectionCache
from index.tables import ChangeRow, CollectionRow


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
