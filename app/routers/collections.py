"""Collections: /v1/collections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.deps import (
    AlignerStoreDep,
    BlobsDep,
    CollectionStoreDep,
    IndexesDep,
    ItemStoreDep,
    JobStoreDep,
    ModelsDep,
    SettingsDep,
    SpaceStoreDep,
    WorkerWakeupDep,
)
from app.schemas.aligners import AlignerList
from app.schemas.collections import CollectionCreate, CollectionList, CollectionPublic
from app.schemas.jobs import JobPublic, MigrationConfirmed
from app.services import aligners as aligner_svc
from app.services import collections as svc
from app.services import jobs as job_svc
from app.services import migrate as migrate_svc

router = APIRouter(prefix="/v1/collections", tags=["collections"])
# A version is a 64-bit row number: a longer one is not a version (422), never a 500.
Version = Annotated[int, Path(ge=0, le=2**63 - 1, description="an aligner version")]


@router.post(
    "",
    status_code=201,
    response_model=CollectionPublic,
    responses={
        409: {"description": "a collection with this name exists, or its model cannot be loaded"}
    },
)
def create_collection(
    body: CollectionCreate,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
) -> CollectionPublic:
    """Create a collection in the space of the server's model, or of the model the body
    names (`MMR_MODEL`, `mmr-mini` or one of `MMR_ALLOWED_MODELS`; 409 if the name exists
    or the model cannot be loaded)."""
    return svc.create_collection(
        settings=settings, collections=collections, indexes=indexes, models=models, body=body
    )


@router.get("", response_model=CollectionList)
def list_collections(
    collections: CollectionStoreDep, items: ItemStoreDep, indexes: IndexesDep, models: ModelsDep
) -> CollectionList:
    """Every collection, oldest first."""
    found = svc.list_collections(
        collections=collections, items=items, indexes=indexes, models=models
    )
    return CollectionList(collections=found)


@router.get("/{name}", response_model=CollectionPublic)
def get_collection(
    name: str,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    models: ModelsDep,
    spaces: SpaceStoreDep,
) -> CollectionPublic:
    """One collection with its item count, index size, and the spaces a migration builds
    or left."""
    return svc.get_collection(
        collections=collections,
        items=items,
        indexes=indexes,
        models=models,
        spaces=spaces,
        name=name,
    )


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_collection(
    name: str,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    blobs: BlobsDep,
) -> Response:
    """Delete a collection, its items and its index."""
    svc.delete_collection(
        collections=collections, items=items, indexes=indexes, blobs=blobs, name=name
    )
    return Response(status_code=204)


@router.get("/{name}/aligners", response_model=AlignerList)
def list_aligners(
    name: str, collections: CollectionStoreDep, aligners: AlignerStoreDep
) -> AlignerList:
    """The collection's aligner versions (heads per modality, how each was made), oldest
    first, and which one is active."""
    return aligner_svc.list_aligners(collections=collections, aligners=aligners, name=name)


@router.post(
    "/{name}/aligners/{version}/activate",
    response_model=AlignerList,
    responses={
        409: {
            "description": "the version is of another embedding space, or a migration of "
            "the collection is queued or running"
        }
    },
)
def activate_aligner(
    name: str,
    version: Version,
    collections: CollectionStoreDep,
    aligners: AlignerStoreDep,
    indexes: IndexesDep,
    jobs: JobStoreDep,
) -> AlignerList:
    """Make a recorded aligner version the active one (roll forward or back): stored raw
    features are re-projected into a new index built beside the live one, then aligner and
    index are swapped together; searches meanwhile answer from the old pair. Refused (409)
    while a migration of the collection is queued or running."""
    job_svc.require_no_migration(jobs, collections.get(name).id, name)
    return aligner_svc.activate(
        collections=collections,
        aligners=aligners,
        indexes=indexes,
        name=name,
        version=version,
    )


@router.post(
    "/{name}/migration/confirm",
    response_model=MigrationConfirmed,
    responses={
        404: {"description": "no collection of that name"},
        409: {"description": "a migration of the collection is queued or running"},
    },
)
def confirm_migration(
    name: str, collections: CollectionStoreDep, spaces: SpaceStoreDep, jobs: JobStoreDep
) -> MigrationConfirmed:
    """Make a migration final: drop the space it left (kept for a rollback until now) and
    any space a failed migration left half built; their storage is freed."""
    return migrate_svc.confirm(collections=collections, spaces=spaces, jobs=jobs, name=name)


@router.post(
    "/{name}/migration/rollback",
    status_code=202,
    response_model=JobPublic,
    responses={
        404: {"description": "no collection of that name"},
        409: {"description": "no earlier space is kept, or a migration is queued or running"},
    },
)
def rollback_migration(
    name: str,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    spaces: SpaceStoreDep,
    jobs: JobStoreDep,
    wakeup: WorkerWakeupDep,
) -> JobPublic:
    """Move back to the space the last migration left: a migrate job to it, which encodes
    only the items written or replaced since the switch (the rest kept their vectors)."""
    body = migrate_svc.rollback_job(collections=collections, spaces=spaces, name=name)
    return job_svc.create_job(
        settings=settings,
        collections=collections,
        jobs=jobs,
        wakeup=wakeup,
        body=body,
        rollback=True,
    )
