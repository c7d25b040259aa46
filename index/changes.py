"""The change log in SQL: every item write appends a row (index/items.py); the indexes of
every process replay it from the sequence their snapshot reflects, and a durable snapshot
lets the rows it covers be pruned."""

from __future__ import annotations

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

    def since(self, *, collection_id: int, seq: int) -> tuple[set[int], int]:
        """Item keys touched after a sequence, and the newest sequence seen."""
        with self.sessions() as session:
            rows = session.execute(
                select(ChangeRow.seq, ChangeRow.item_pk).where(
                    ChangeRow.collection_id == collection_id, ChangeRow.seq > seq
                )
            ).all()
        newest = max((r[0] for r in rows), default=seq)
        return {int(r[1]) for r in rows}, int(newest)

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
