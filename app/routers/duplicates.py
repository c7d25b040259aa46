"""Duplicates: /v1/collections/{name}/duplicates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import (
    CollectionStoreDep,
    DuplicateFinderDep,
    IndexesDep,
    ItemStoreDep,
    ListingStoreDep,
    SettingsDep,
)
from app.schemas.common import Modality
from app.schemas.duplicates import DEFAULT_THRESHOLD, MAX_LIMIT, DuplicatePage
from app.services.duplicates import Listing, duplicates

router = APIRouter(prefix="/v1/collections/{name}", tags=["duplicates"])


@router.get(
    "/duplicates",
    response_model=DuplicatePage,
    responses={
        400: {"description": "the cursor is not a `next_cursor` this server gave"},
        422: {
            "description": "a collection too large to list within a request, and no stored "
            "listing covers it: the message names the `duplicates` job to post"
        },
        429: {"description": "another listing is being computed on this server; retry"},
    },
)
def list_duplicates(
    name: str,
    settings: SettingsDep,
    collections: CollectionStoreDep,
    items: ItemStoreDep,
    indexes: IndexesDep,
    finder: DuplicateFinderDep,
    listings: ListingStoreDep,
    threshold: Annotated[
        float,
        Query(
            gt=0,
            le=1,
            allow_inf_nan=False,
            description="the least cosine similarity of a pair; near-copies of a photo "
            "(re-saved, resized, cropped a little) score above the default",
            examples=[0.98],
        ),
    ] = DEFAULT_THRESHOLD,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, examples=[100])] = 100,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            description="the `next_cursor` of the page before",
            examples=["eyJzIjogMC45NjIsICJhIjogNCwgImIiOiA5fQ"],
        ),
    ] = None,
    modality: Annotated[
        Modality | None, Query(description="only items of this modality", examples=["image"])
    ] = None,
) -> DuplicatePage:
    """Pairs of stored items at least `threshold` alike, best first; pass `next_cursor`
    back as `cursor` for the next page. A collection too large to list within a request
    answers from the newest listing a `duplicates` job stored (`POST /v1/jobs`) that covers
    the threshold and modality; `stored` then says which, and whether it is stale."""
    return duplicates(
        finder=finder,
        collections=collections,
        items=items,
        indexes=indexes,
        listings=listings,
        exact_max=settings.duplicates_exact_max,
        deadline_s=settings.duplicates_deadline_s,
        name=name,
        listing=Listing(threshold=threshold, limit=limit, cursor=cursor, modality=modality),
    )
