"""Collections: /v1/collections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.schemas.aligners import AlignerList
from app.schemas.collections import CollectionCreate, CollectionList, CollectionPublic
from app.services import aligners as aligner_svc
from app.services import collections as svc
from app.state import ServicesDep

router = APIRouter(prefix="/v1/collections", tags=["collections"])
# A version is a 64-bit row number: a longer one is not a version (422), never a 500.
Version = Annotated[int, Path(ge=0, le=2**63 - 1, description="an aligner version")]


@router.post(
    "",
    status_code=201,
    response_model=CollectionPublic,
    responses={409: {"description": "a collection with this name exists"}},
)
def create_collection(body: CollectionCreate, services: ServicesDep) -> CollectionPublic:
    """Create a collection in the active model's embedding space (409 if the name exists)."""
    return svc.create_collection(services=services, body=body)


@router.get("", response_model=CollectionList)
def list_collections(services: ServicesDep) -> CollectionList:
    """Every collection, oldest first."""
    return CollectionList(collections=svc.list_collections(services=services))


@router.get("/{name}", response_model=CollectionPublic)
def get_collection(name: str, services: ServicesDep) -> CollectionPublic:
    """One collection with its item count and index size."""
    return svc.get_collection(services=services, name=name)


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_collection(name: str, services: ServicesDep) -> Response:
    """Delete a collection, its items and its index."""
    svc.delete_collection(services=services, name=name)
    return Response(status_code=204)


@router.get("/{name}/aligners", response_model=AlignerList)
def list_aligners(name: str, services: ServicesDep) -> AlignerList:
    """The collection's aligner versions (heads per modality, how each was made), oldest
    first, and which one is active."""
    return aligner_svc.list_aligners(services=services, name=name)


@router.post(
    "/{name}/aligners/{version}/activate",
    response_model=AlignerList,
    responses={409: {"description": "the version is of another embedding space"}},
)
def activate_aligner(name: str, version: Version, services: ServicesDep) -> AlignerList:
    """Make a recorded aligner version the active one (roll forward or back): stored raw
    features are re-projected into a new index built beside the live one, then aligner and
    index are swapped together; searches meanwhile answer from the old pair."""
    return aligner_svc.activate(services=services, name=name, version=version)
