"""Bodies of /v1/collections/{name}/search: the query, its constraints and the results."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.ids import check_key
from app.schemas.common import InputText, ItemId, Modality, NoBool, Scalar
from app.schemas.items import ItemPublic

MAX_K = 1000
# Filters: each key is a subquery and each value a bound parameter; beyond these a search
# costs the database more than it can answer in time (hundreds of keys took Postgres
# minutes to plan). Values longer than a tag holds could never match anything.
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 1000
MAX_FILTER_VALUES_TOTAL = 4000
MAX_FILTER_VALUE_CHARS = 1024


class SearchOptions(BaseModel):
    """How many and which items a search may return (JSON fields or multipart form fields)."""

    model_config = ConfigDict(extra="forbid")
    k: Annotated[int, NoBool] = Field(10, ge=1, le=MAX_K)
    modalities: list[Modality] | None = None
    filter: dict[str, Scalar | list[Scalar]] | None = Field(
        None,
        description=f"metadata equality, a list meaning any of: at most {MAX_FILTER_KEYS} "
        f"keys, {MAX_FILTER_VALUES} values a key, {MAX_FILTER_VALUES_TOTAL} in all, strings "
        f"of at most {MAX_FILTER_VALUE_CHARS} characters",
    )

    @field_validator("filter")
    @classmethod
    def _bounded_filter(
        cls, value: dict[str, Scalar | list[Scalar]] | None
    ) -> dict[str, Scalar | list[Scalar]] | None:
        return None if value is None else check_filter(value)


class SearchRequest(SearchOptions):
    """A search by text, by stored item, or by raw vector."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a dog in the rain", "k": 5, "modalities": ["image"]},
                {"item_id": "photo-42", "k": 10, "filter": {"album": ["2024", "2025"]}},
            ]
        },
    )
    text: InputText | None = None
    item_id: ItemId | None = None
    vector: list[float] | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [f for f in ("text", "item_id", "vector") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, item_id or vector")
        return self


class SearchHit(BaseModel):
    """One result."""

    item: ItemPublic
    score: float
    start: float | None = Field(None, description="audio: start of the best segment, seconds")
    end: float | None = Field(None, description="audio: end of the best segment, seconds")


class SearchResponse(BaseModel):
    """Results best first."""

    results: list[SearchHit]
    query_modality: str
    aligner_version: int = Field(
        0, description="the collection's aligner version that scored every result"
    )


def check_filter(value: dict[str, Scalar | list[Scalar]]) -> dict[str, Scalar | list[Scalar]]:
    """A search filter within the bounds above, its keys normalised like metadata keys."""
    if len(value) > MAX_FILTER_KEYS:
        raise ValueError(f"the filter has {len(value)} keys; the limit is {MAX_FILTER_KEYS}")
    total = 0
    checked: dict[str, Scalar | list[Scalar]] = {}
    for key, wanted in value.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if len(values) > MAX_FILTER_VALUES:
            raise ValueError(
                f"filter key {key!r} has {len(values)} values; the limit is {MAX_FILTER_VALUES}"
            )
        total += len(values)
        for v in values:
            if isinstance(v, str) and len(v) > MAX_FILTER_VALUE_CHARS:
                raise ValueError(
                    f"a value of filter key {key!r} is over {MAX_FILTER_VALUE_CHARS} characters"
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"filter key {key!r}: numbers must be finite")
        name = check_key(key)
        if name in checked:  # the last would silently replace the other's condition
            raise ValueError(f"two filter keys are {name!r} once normalised to NFC")
        checked[name] = wanted
    if total > MAX_FILTER_VALUES_TOTAL:
        raise ValueError(f"the filter has {total} values; the limit is {MAX_FILTER_VALUES_TOTAL}")
    return checked
