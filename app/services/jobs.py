"""Jobs: queue, read, list and cancel; what a running job sees (:class:`JobContext`); the
worker (app/worker.py) runs them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from app.schemas.jobs import (
    DuplicatesJobCreate,
    FinetuneJobCreate,
    JobList,
    JobPublic,
    MigrateJobCreate,
    ReindexJobCreate,
)
from app.services.collections import index_spec, require_allowed
from app.services.errors import NotAllowed, QueueFull
from app.services.views import job_public
from app.settings import Settings
from index.collections import CollectionStore
from index.errors import ConflictError
from index.jobs import JobStore
from index.tables import JobRow


@dataclass
class JobContext:
    """What a running job sees: its row, a place for progress, and whether to stop."""

    job: JobRow
    progress: dict[str, Any] = field(default_factory=lambda: {"fraction": 0.0})
    stop: threading.Event = field(default_factory=threading.Event)

    def report(self, **progress: Any) -> None:
        """Record progress; the next heartbeat writes it to SQL."""
        self.progress = {**self.progress, **progress}

    def should_stop(self) -> bool:
        """True once the job was cancelled, taken back, or the worker is shutting down."""
        return self.stop.is_set()


def create_job(
    *,
    settings: Settings,
    collections: CollectionStore,
    jobs: JobStore,
    wakeup: threading.Event,
    body: FinetuneJobCreate | ReindexJobCreate | MigrateJobCreate | DuplicatesJobCreate,
    rollback: bool = False,
) -> JobPublic:
    """Queue a job for an existing collection (404 when there is none, 429 when the queue is
    full, 409 while a migration of it is queued or running) and set ``wakeup`` (an
    in-process worker starts on it without waiting a poll)."""
    row = collections.get(body.collection)
    _require_room(settings, jobs, row.id, row.name)
    if isinstance(body, ReindexJobCreate) and body.index is not None:
        index_spec(body.index, dim=row.dim)  # 422 now rather than a failed job later
    # A model outside the schema's syntax never gets here (422); back to a space the
    # collection kept (a rollback) is always allowed.
    if isinstance(body, MigrateJobCreate) and not rollback:
        require_allowed(settings, body.model)
        if body.audio_model is not None and not settings.audio_allowed(body.audio_model):
            raise NotAllowed(
                f"audio model {body.audio_model!r} is not allowed here: a migration may "
                "name the model's own tower (empty), none, MMR_AUDIO_MODEL, or one listed "
                "in MMR_ALLOWED_MODELS"
            )
    require_no_migration(jobs, row.id, row.name)
    if isinstance(body, MigrateJobCreate):
        # A fine-tune or reindex finishing after the switch would write into the new space.
        busy = jobs.unfinished(collection_id=row.id)
        if busy is not None:
            raise ConflictError(
                f"collection {row.name!r} has a {busy.type} job {busy.status} ({busy.id}): "
                "a migration starts once it has ended; wait for it, or cancel it"
            )
    params = body.model_dump(exclude={"type", "collection"}, mode="json")
    job = jobs.create(type=body.type, collection_id=row.id, collection=row.name, params=params)
    wakeup.set()
    return job_public(job)


def require_no_migration(jobs: JobStore, collection_id: int, name: str) -> None:
    """Refuse (409) any job of a collection a migration will move or is moving: a fine-tune
    or reindex would work on the space about to be left, a second migration on a space
    about to change."""
    migrating = jobs.unfinished(collection_id=collection_id, type="migrate")
    if migrating is not None:
        raise ConflictError(
            f"collection {name!r} is being migrated to {migrating.params.get('model')} (job "
            f"{migrating.id}, {migrating.status}): wait for it to end, or cancel it"
        )


def _require_room(settings: Settings, jobs: JobStore, collection_id: int, name: str) -> None:
    """Refuse a job while too many wait: each holds its body in SQL and a worker's turn.
    (Two requests at the same moment may both pass: the caps are a bound, not a count.)"""
    queued = jobs.count_queued(collection_id=collection_id)
    if queued >= settings.max_queued_jobs_per_collection:
        raise QueueFull(
            f"{queued} jobs of collection {name!r} are queued already, the most "
            f"MMR_MAX_QUEUED_JOBS_PER_COLLECTION allows: wait for them to run, or cancel some"
        )
    # No count in this message: a key limited to some collections must not learn how many
    # jobs the others queued (docs/security.md, Tenants).
    if jobs.count_queued() >= settings.max_queued_jobs:
        raise QueueFull(
            "the job queue is full (MMR_MAX_QUEUED_JOBS): retry once queued jobs have run"
        )


def get_job(*, jobs: JobStore, job_id: str) -> JobPublic:
    """One job."""
    return job_public(jobs.get(job_id))


def list_jobs(*, jobs: JobStore, collection: str | None, status: str | None, limit: int) -> JobList:
    """Jobs, newest first."""
    rows = jobs.list(collection=collection, status=status, limit=limit)
    return JobList(jobs=[job_public(r) for r in rows])


def cancel_job(*, jobs: JobStore, job_id: str) -> JobPublic:
    """Cancel a queued or running job (409 when it has ended)."""
    return job_public(jobs.cancel(job_id))
