"""Duplicates listings in SQL: the pairs a duplicates job found, kept for the route to page.

A listing belongs to its job (``job_id``) and collection; it reflects the collection as its
change-log head ``change_seq`` stood when the job began reading. The newest listing that
covers a request (same modality, or all; a threshold at most the request's) answers it.
Saving one drops the listings it makes useless (same collection and modality, a threshold
at least its own): they cover nothing it does not, and are older.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from index.errors import JobEndedError
from index.tables import DuplicateListingRow, JobRow


@dataclass(frozen=True)
class ListingInfo:
    """A stored listing without its pairs."""

    job_id: str
    collection_id: int
    modality: str | None
    threshold: float
    change_seq: int
    aligner_version: int
    index_epoch: int
    model: str
    count: int
    computed_at: datetime


_INFO = (
    DuplicateListingRow.job_id,
    DuplicateListingRow.collection_id,
    DuplicateListingRow.modality,
    DuplicateListingRow.threshold,
    DuplicateListingRow.change_seq,
    DuplicateListingRow.aligner_version,
    DuplicateListingRow.index_epoch,
    DuplicateListingRow.model,
    DuplicateListingRow.count,
    DuplicateListingRow.computed_at,
)


class ListingStore:
    """Duplicates listings over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def save(self, info: ListingInfo, pairs: bytes, *, worker: str) -> None:
        """Store a job's listing, only while the job is still this worker's (a cancel that
        landed meanwhile stores nothing: JobEndedError), and drop those it covers."""
        with self.sessions.begin() as session:
            job = session.get(JobRow, info.job_id, with_for_update=True)
            if job is None or job.status != "running" or job.worker != worker:
                raise JobEndedError(f"job {info.job_id} is no longer running on this worker")
            same = (
                DuplicateListingRow.modality.is_(None)
                if info.modality is None
                else DuplicateListingRow.modality == info.modality
            )
            session.execute(
                delete(DuplicateListingRow).where(
                    DuplicateListingRow.collection_id == info.collection_id,
                    same,
                    DuplicateListingRow.threshold >= info.threshold,
                )
            )
            session.add(
                DuplicateListingRow(
                    job_id=info.job_id,
                    collection_id=info.collection_id,
                    modality=info.modality,
                    threshold=info.threshold,
                    change_seq=info.change_seq,
                    aligner_version=info.aligner_version,
                    index_epoch=info.index_epoch,
                    model=info.model,
                    count=info.count,
                    pairs=pairs,
                    computed_at=info.computed_at,
                )
            )

    def newest(
        self, *, collection_id: int, modality: str | None, threshold: float
    ) -> ListingInfo | None:
        """The newest listing of the collection that covers ``threshold`` and ``modality``
        (a listing of all modalities covers each): of the latest change-log position."""
        kinds: ColumnElement[bool] = DuplicateListingRow.modality.is_(None)
        if modality is not None:
            kinds = or_(kinds, DuplicateListingRow.modality == modality)
        stmt = (
            select(*_INFO)
            .where(
                DuplicateListingRow.collection_id == collection_id,
                kinds,
                DuplicateListingRow.threshold <= threshold,
            )
            # The collection's later state first: hosts' clocks may disagree on computed_at.
            .order_by(
                DuplicateListingRow.change_seq.desc(),
                DuplicateListingRow.computed_at.desc(),
                DuplicateListingRow.job_id,
            )
            .limit(1)
        )
        with self.sessions() as session:
            found = session.execute(stmt).first()
        return None if found is None else ListingInfo(**found._asdict())

    def pairs(self, job_id: str) -> bytes | None:
        """A listing's pairs (None once it is gone: its collection deleted, or replaced)."""
        with self.sessions() as session:
            return session.scalar(
                select(DuplicateListingRow.pairs).where(DuplicateListingRow.job_id == job_id)
            )
