"""A collection's aligner versions in SQL: opaque artefacts, numbered per collection.

What the bytes mean is the model side's business (models/aligner.py); here they are
recorded, listed, fetched, and one version is named active on the collection row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from index.collections import CollectionCache
from index.errors import NotFoundError
from index.tables import AlignerRow, CollectionRow

MAX_VERSION = 2**31 - 1  # aligner versions are 32-bit integers in SQL


class AlignerStore:
    """Aligner versions over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session], cache: CollectionCache) -> None:
        self.sessions = sessions
        self.cache = cache

    def add(
        self, *, collection_id: int, artefact: bytes, meta: dict[str, Any], activate: bool
    ) -> AlignerRow:
        """Record a new version (the next number) of a collection's aligner."""
        with self.sessions.begin() as session:
            newest = session.scalar(
                select(func.max(AlignerRow.version)).where(
                    AlignerRow.collection_id == collection_id
                )
            )
            row = AlignerRow.of(collection_id, int(newest or 0) + 1, artefact, meta)
            session.add(row)
            if activate:
                collection = session.get(CollectionRow, collection_id)
                if collection is None:
                    raise NotFoundError("the collection was deleted")
                collection.aligner_version = row.version
        self.cache.forget()
        return row

    def get(self, *, collection_id: int, version: int) -> AlignerRow | None:
        """One recorded version, or None (version 0 is never recorded: the identity)."""
        if not 0 < version <= MAX_VERSION:  # no row holds it; the database would refuse it
            return None
        with self.sessions() as session:
            return session.scalar(
                select(AlignerRow).where(
                    AlignerRow.collection_id == collection_id, AlignerRow.version == version
                )
            )

    def list(self, collection_id: int) -> list[AlignerRow]:
        """Every recorded version of a collection, oldest first."""
        with self.sessions() as session:
            stmt = (
                select(AlignerRow)
                .where(AlignerRow.collection_id == collection_id)
                .order_by(AlignerRow.version)
            )
            return list(session.scalars(stmt))
