"""Durable jobs in SQL: queued -> running (claimed with a lease) -> succeeded | failed | cancelled.

A worker claims the oldest queued job whose collection runs nothing else (Postgres: ``FOR
UPDATE SKIP LOCKED``, so workers never queue behind each other's locks; a partial unique
index keeps one running job per collection on both backends), extends its lease with every
heartbeat and finishes it only while it still holds it. A job whose lease ran out (its
worker died) is queued again, or failed with the reason once it has had ``max_attempts``.
A cancel is immediate in SQL; the worker learns of it at its next heartbeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from index.columns import storable
from index.errors import ConflictError, NotFoundError
from index.items import lock_collection
from index.tables import JobRow, utcnow

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ENDED = (SUCCEEDED, FAILED, CANCELLED)
SHED_OVER = 16  # an ended job's parameter lists longer than this are kept as their length


def _may_exist(job_id: str) -> bool:
    """Whether a job could have this id: 32 hex digits are made, and Postgres refuses to
    even compare a text holding NUL."""
    return len(job_id) <= 32 and storable(job_id)


def _shed_inputs(session: Session, job_id: str) -> None:
    """An ended job keeps its long input lists as their counts (``pairs`` ->
    ``pairs_count``): nothing runs it again, and every listing would read them back."""
    row = session.get(JobRow, job_id)
    if row is None:
        return
    long = {k: v for k, v in row.params.items() if isinstance(v, list) and len(v) > SHED_OVER}
    if long:
        kept = {k: v for k, v in row.params.items() if k not in long}
        row.params = {**kept, **{f"{k}_count": len(v) for k, v in long.items()}}


class JobStore:
    """Jobs over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        self._db_clock = bind is not None and bind.dialect.name == "postgresql"

    # -- the clock: the database's ----------------------------------------------------------
    # Workers on several hosts compare leases and order jobs by these times: on Postgres
    # they are the database's (its transaction time), so a worker whose clock runs an hour
    # behind neither loses its lease at once nor keeps a dead one's. SQLite is opened by
    # one host only: its clock is this one.
    def _now(self) -> Any:
        """Now, as an SQL expression on Postgres (``now()``), else this host's time."""
        return func.now() if self._db_clock else utcnow()

    def _in(self, seconds: float) -> Any:
        """``seconds`` from now, by the same clock."""
        return self._now() + timedelta(seconds=seconds)

    def create(
        self, *, type: str, collection_id: int, collection: str, params: dict[str, Any]
    ) -> JobRow:
        """Queue a job."""
        row = _queued(type, collection_id, collection, params)
        with self.sessions.begin() as session:
            if self._db_clock:
                row.created_at = session.execute(select(func.now())).scalar_one()
            session.add(row)
        return row

    def create_unless_busy(
        self,
        *,
        type: str,
        collection_id: int,
        collection: str,
        params: dict[str, Any],
        quiet_after: Sequence[str] = (),
        quiet_s: float = 0.0,
    ) -> JobRow | None:
        """Queue a job unless one of the collection is queued or running, or one of its
        ``type`` ended in one of ``quiet_after`` within ``quiet_s`` seconds (None then): the
        looks and the insert in one transaction under the collection's write lock, so that
        processes asking at the same moment queue one job between them, and a cancel that
        lands meanwhile is seen (the job busy, or ended: never neither)."""
        row = _queued(type, collection_id, collection, params)
        busy = select(JobRow.id).where(
            JobRow.collection_id == collection_id, JobRow.status.in_([QUEUED, RUNNING])
        )
        with self.sessions.begin() as session:
            lock_collection(session, collection_id)
            if session.scalar(busy.limit(1)) is not None:
                return None
            if quiet_after and session.scalar(
                self._ended(collection_id, type, quiet_after, quiet_s).limit(1)
            ):
                return None
            if self._db_clock:
                row.created_at = session.execute(select(func.now())).scalar_one()
            session.add(row)
        return row

    def get(self, job_id: str) -> JobRow:
        """One job; NotFoundError when there is none."""
        with self.sessions() as session:
            row = session.get(JobRow, job_id) if _may_exist(job_id) else None
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        return row

    def list(
        self, *, collection: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[JobRow]:
        """Jobs, newest first, optionally of one collection or status."""
        stmt = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        if collection is not None:
            if not storable(collection):
                return []
            stmt = stmt.where(JobRow.collection == collection)
        if status is not None:
            stmt = stmt.where(JobRow.status == status)
        with self.sessions() as session:
            return list(session.scalars(stmt))

    def count_queued(self, *, collection_id: int | None = None) -> int:
        """Jobs waiting to run, of one collection or of all."""
        stmt = select(func.count()).select_from(JobRow).where(JobRow.status == QUEUED)
        if collection_id is not None:
            stmt = stmt.where(JobRow.collection_id == collection_id)
        with self.sessions() as session:
            return int(session.scalar(stmt) or 0)

    def ended_lately(
        self, *, collection_id: int, type: str, statuses: Sequence[str], within_s: float
    ) -> bool:
        """Whether a job of the collection and type ended in one of ``statuses`` within the
        last ``within_s`` seconds (by the jobs' clock: the database's on Postgres)."""
        with self.sessions() as session:
            found = self._ended(collection_id, type, statuses, within_s).limit(1)
            return session.scalar(found) is not None

    def _ended(
        self, collection_id: int, type: str, statuses: Sequence[str], within_s: float
    ) -> Select[str]:
        return select(JobRow.id).where(
            JobRow.collection_id == collection_id,
            JobRow.type == type,
            JobRow.status.in_(list(statuses)),
            JobRow.finished_at >= self._in(-within_s),
        )

    def unfinished(self, *, collection_id: int, type: str | None = None) -> JobRow | None:
        """The oldest queued or running job (of a type, or of any) of a collection, or None."""
        stmt = (
            select(JobRow)
            .where(JobRow.collection_id == collection_id, JobRow.status.in_([QUEUED, RUNNING]))
            .order_by(JobRow.created_at, JobRow.id)
            .limit(1)
        )
        if type is not None:
            stmt = stmt.where(JobRow.type == type)
        with self.sessions() as session:
            return session.scalar(stmt)

    def still_running(self, job_id: str, *, worker: str) -> bool:
        """Whether this worker still runs the job (not cancelled, not taken back): asked
        of SQL itself, not of the last heartbeat."""
        stmt = select(JobRow.id).where(
            JobRow.id == job_id, JobRow.status == RUNNING, JobRow.worker == worker
        )
        with self.sessions() as session:
            return session.scalar(stmt) is not None

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a queued or running job now; ConflictError when it has already ended."""
        if not _may_exist(job_id):
            raise NotFoundError(f"no job {job_id!r}")
        with self.sessions.begin() as session:
            done = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.in_([QUEUED, RUNNING]))
                .values(
                    status=CANCELLED,
                    error="cancelled by a client",
                    finished_at=self._now(),
                    lease_expires_at=None,
                )
            )
            if done.rowcount:  # type: ignore[attr-defined]
                _shed_inputs(session, job_id)
        row = self.get(job_id)
        if done.rowcount == 0:  # type: ignore[attr-defined]
            raise ConflictError(f"job {job_id} has already ended ({row.status})")
        return row

    # -- workers ------------------------------------------------------------------------
    def claim(
        self, *, worker: str, lease_s: float, types: Sequence[str] | None = None
    ) -> JobRow | None:
        """The oldest runnable queued job, now running under this worker; None when none is."""
        busy = select(JobRow.collection_id).where(JobRow.status == RUNNING)
        stmt = (
            select(JobRow.id)
            .where(JobRow.status == QUEUED, JobRow.collection_id.not_in(busy))
            .order_by(JobRow.created_at, JobRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if types is not None:
            stmt = stmt.where(JobRow.type.in_(list(types)))
        now = self._now()
        try:
            with self.sessions.begin() as session:
                job_id = session.scalar(stmt)
                if job_id is None:
                    return None
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == QUEUED)
                    .values(
                        status=RUNNING,
                        worker=worker,
                        attempts=JobRow.attempts + 1,
                        lease_expires_at=self._in(lease_s),
                        started_at=now,
                    )
                )
        except (IntegrityError, OperationalError):
            # Another worker started a job of that collection, or (SQLite) wrote first:
            # nothing is claimed, the next poll tries again.
            return None
        row = self.get(job_id)
        return row if row.status == RUNNING and row.worker == worker else None

    def heartbeat(
        self, job_id: str, *, worker: str, lease_s: float, progress: dict[str, Any] | None = None
    ) -> bool:
        """Extend the lease (and record progress); False when the job is no longer this
        worker's to run (cancelled, or taken back after the lease ran out)."""
        values: dict[str, Any] = {"lease_expires_at": self._in(lease_s)}
        if progress is not None:
            values["progress"] = progress
        return self._while_mine(job_id, worker, values)

    def finish(
        self,
        job_id: str,
        *,
        worker: str,
        status: str,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """End a job this worker still runs; False when it is not (cancelled or lost)."""
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": self._now(),
            "lease_expires_at": None,
        }
        if metrics is not None:
            values["metrics"] = metrics
        if progress is not None:
            values["progress"] = progress
        return self._while_mine(job_id, worker, values, ending=True)

    def release(self, job_id: str, *, worker: str) -> bool:
        """Put a job this worker runs back in the queue (the worker is shutting down)."""
        return self._while_mine(
            job_id, worker, {"status": QUEUED, "worker": None, "lease_expires_at": None}
        )

    def _while_mine(
        self, job_id: str, worker: str, values: dict[str, Any], *, ending: bool = False
    ) -> bool:
        """Update a job only while this worker runs it (``ending`` it: sheds its inputs too);
        whether it did."""
        with self.sessions.begin() as session:
            done = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == RUNNING, JobRow.worker == worker)
                .values(**values)
            )
            if ending and done.rowcount:  # type: ignore[attr-defined]
                _shed_inputs(session, job_id)
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def reap(self, *, max_attempts: int) -> int:
        """Jobs whose worker stopped heartbeating: queued again, or failed after
        ``max_attempts``; how many were touched."""
        now = self._now()
        expired = (JobRow.status == RUNNING, JobRow.lease_expires_at < now)
        with self.sessions.begin() as session:
            failed = session.execute(
                update(JobRow)
                .where(*expired, JobRow.attempts >= max_attempts)
                .values(
                    status=FAILED,
                    finished_at=now,
                    lease_expires_at=None,
                    error=(
                        f"the worker running it stopped (no heartbeat before its lease ran "
                        f"out) on each of {max_attempts} attempts"
                    ),
                )
            )
            requeued = session.execute(
                update(JobRow)
                .where(*expired, JobRow.attempts < max_attempts)
                .values(status=QUEUED, worker=None, lease_expires_at=None)
            )
        return int(failed.rowcount + requeued.rowcount)  # type: ignore[attr-defined]


def _queued(type: str, collection_id: int, collection: str, params: dict[str, Any]) -> JobRow:
    """A new job's row, queued."""
    return JobRow(
        id=uuid.uuid4().hex,
        type=type,
        collection_id=collection_id,
        collection=collection,
        status=QUEUED,
        params=params,
        progress={"fraction": 0.0},
        metrics={},
        attempts=0,
        created_at=utcnow(),
    )
