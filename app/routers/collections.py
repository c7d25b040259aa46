"""Collections: /v1/collections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.deps import (
    AlignerStoreDep,
    BlobsDep,
    CollectionStoreDep,
    EmbedderDep,
    IndexesDep,
    ItemStoreDep,
)
from app.schemas.aligners import AlignerList
from app.schemas.collections import CollectionCreate, CollectionList, CollectionPublic
from app.services import aligners as aligner_svc
from app.services import collections as svc

router = APIRouter(prefix="/v1/collections", tags=["collections"])
# A version is a 64-bit row number: a longer one is not a version (422), never a 500.
Version = Annotated[int, Path(ge=0, le=2**63 - 1, description="an aligner version")]


@router.post(
    "",
    status_code=201,
    response_model=CollectionPublic,
    responses={409: {"description": "a collection with this name exists"}},
)
def create_collection(
    body: CollectionCreate,
    collections: CollectionStoreDep,
    indexes: IndexesDep,
    embedder: EmbedderDep,
) -> CollectionPublic:
    """Create a collection in the active model's embedding space (409 if the name exists)."""
    return svc.create_collection(
        collections=collections, indexes=indexes, embedder=embedder, body=body
    )


@router.get("", response_model=CollectionList)
def list_collections(
    collections: CollectionStoreDep, items: ItemStoreDep, indexes: IndexesDep, embedder: EmbedderDep
) -> CollectionList:
    """Every collection, oldest first."""
    found = svc.list_collections(
        collections=collections, items=items, indexes=indexes, embedder=embedder
    )
    return CollectionList(collections=found)


@router.get("/{name}", response_model=CollectionPublic)
def get_collection(
    name: str,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    embedder: EmbedderDep,
) -> CollectionPublic:
    """One collection with its item count and index size."""
    return svc.get_collection(
        collections=collections, items=items, indexes=indexes, embedder=embedder, name=name
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
    responses={409: {"description": "the version is of another embedding space"}},
)
def activate_aligner(
    name: str,
    version: Version,
    collections: CollectionStoreDep,
    aligners: AlignerStoreDep,
    indexes: IndexesDep,
    embedder: EmbedderDep,
) -> AlignerList:
    """Make a recorded aligner version the active one (roll forward or back): stored raw
    features are re-projected into a new index built beside the live one, then aligner and
    index are swapped together; searches meanwhile answer from the old pair."""
    return aligner_svc.activate(
        collections=collections,
        aligners=aligners,
        indexes=indexes,
        embedder=embedder,
        name=name,
        version=version,
    )
