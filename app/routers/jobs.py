"""Background jobs: /v1/jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionStoreDep, JobStoreDep, SettingsDep, WorkerWakeupDep
from app.schemas.jobs import JobCreate, JobList, JobPublic
from app.services import jobs as svc

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses={
        404: {"description": "no collection of that name, or no item of a pair"},
        409: {"description": "a migration of the collection is queued or running"},
        429: {"description": "too many jobs are queued: retry after `Retry-After` seconds"},
    },
)
async def create_job(
    body: Annotated[JobCreate, Field(discriminator="type")],
    settings: SettingsDep,
    collections: CollectionStoreDep,
    jobs: JobStoreDep,
    wakeup: WorkerWakeupDep,
) -> JobPublic:
    """Queue a job: `finetune` (train the collection's aligner heads on pairs of its items,
    then activate the new version by `activate`), `reindex` (rebuild the index from SQL) or
    `migrate` (encode every stored original again with another model, beside the live
    space, then switch the collection to it in one step; the old space is kept until
    `POST /v1/collections/{name}/migration/confirm`). A worker runs it; poll
    `GET /v1/jobs/{id}` for progress and metrics."""
    return await run_in_threadpool(
        svc.create_job,
        settings=settings,
        collections=collections,
        jobs=jobs,
        wakeup=wakeup,
        body=body,
    )


@router.get("", response_model=JobList)
async def list_jobs(
    jobs: JobStoreDep,
    collection: str | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """Jobs, newest first; optionally of one collection or in one status."""
    return await run_in_threadpool(
        svc.list_jobs, jobs=jobs, collection=collection, status=status, limit=limit
    )


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, jobs: JobStoreDep) -> JobPublic:
    """One job: status, progress (fraction, epoch, loss, ETA), metrics, error."""
    return await run_in_threadpool(svc.get_job, jobs=jobs, job_id=job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={409: {"description": "the job has already ended"}},
)
async def cancel_job(job_id: str, jobs: JobStoreDep) -> JobPublic:
    """Cancel a queued or running job (409 when it has already ended)."""
    return await run_in_threadpool(svc.cancel_job, jobs=jobs, job_id=job_id)
