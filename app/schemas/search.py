"""Bodies of /v1/collections/{name}/search: the query, its constraints and the results."""

from __future__ import annotations

import math
from typing import Annotated, Literal

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

# Hybrid's score: (1 - w) x the cosine + w x the lexical score, the lexical weight w =
# MAX_LEXICAL_WEIGHT x s^2, s the specificity of the query's rarest word in the collection
# (its idf over the idf of a word one item holds). app/services/search.py blends;
# bench/hybrid.py measured the rule (docs/search.md).
MAX_LEXICAL_WEIGHT = 0.9
HYBRID_SCORE = (
    "(1 - w) x cosine + w x lexical score, w = "
    f"{MAX_LEXICAL_WEIGHT} x s^2, s in [0, 1] how rare the query's rarest matching word is "
    "in the collection (1: one item holds it)"
)
MIN_SCORE_DESCRIPTION = (
    "no result scored below this, in the mode's score: cosine (-1 to 1) in vector mode, "
    "r/(1+r) of the text relevance r (0 to 1) in lexical mode, "
    f"{HYBRID_SCORE} (-1 to 1) in hybrid mode"
)
MODE_DESCRIPTION = (
    "vector: nearest in the embedding space; lexical: full-text match of the query's words "
    "in text items and metadata values; hybrid: the union of both top lists, each item "
    f"scored {HYBRID_SCORE}. lexical and hybrid need text: a `text` query, or text parts "
    "in `query`"
)

MAX_QUERY_PARTS = 16
SearchMode = Literal["vector", "lexical", "hybrid"]
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class SearchOptions(BaseModel):
    """How many and which items a search may return (JSON fields or multipart form fields)."""

    model_config = ConfigDict(extra="forbid")
    k: Annotated[int, NoBool] = Field(10, ge=1, le=MAX_K)
    offset: Annotated[int, NoBool] = Field(
        0,
        ge=0,
        le=MAX_K - 1,
        description=f"skip this many of the best results (pages); results go {MAX_K} deep, "
        "so a page reaching past that has fewer than k",
    )
    min_score: Annotated[float, Field(ge=-1.0, le=1.0), NoBool] | None = Field(
        None,
        description=MIN_SCORE_DESCRIPTION,
    )
    mode: SearchMode = Field("vector", description=MODE_DESCRIPTION)
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


class QueryPart(BaseModel):
    """One part of a composed query: a text, a stored item, a vector or a file (base64),
    and its weight."""

    model_config = ConfigDict(extra="forbid")
    text: InputText | None = None
    item_id: ItemId | None = None
    vector: list[float] | None = None
    data: str | None = Field(
        None,
        description="a file (image or sound), base64-encoded",
        # Documented for clients; the service checks it and says what is wrong in words.
        json_schema_extra={"contentEncoding": "base64", "pattern": BASE64},
    )
    weight: Annotated[float, NoBool] = Field(
        1.0, ge=-1e6, le=1e6, description="may be negative: away from this part"
    )

    @model_validator(mode="after")
    def _one_source(self) -> QueryPart:
        given = [f for f in ("text", "item_id", "vector", "data") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("each query part gives exactly one of text, item_id, vector or data")
        return self


class SearchRequest(SearchOptions):
    """A search by text, by stored item, or by raw vector."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a dog in the rain", "k": 5, "modalities": ["image"]},
                {"item_id": "photo-42", "k": 10, "filter": {"album": ["2024", "2025"]}},
                {"text": "a dog in the rain", "k": 10, "offset": 10, "min_score": 0.2},
                {"text": "XJ-9000 charger", "mode": "hybrid", "k": 5},
                {
                    "query": [
                        {"text": "a beach", "weight": 1.0},
                        {"item_id": "photo-42", "weight": 0.5},
                        {"text": "people", "weight": -0.5},
                    ],
                    "k": 5,
                },
            ]
        },
    )
    text: InputText | None = None
    item_id: ItemId | None = None
    vector: list[float] | None = None
    query: list[QueryPart] | None = Field(
        None,
        min_length=1,
        max_length=MAX_QUERY_PARTS,
        description="a weighted sum of parts in the collection's space, instead of one text, "
        "item or vector",
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [f for f in ("text", "item_id", "vector", "query") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, item_id, vector or query")
        return self


class SearchHit(BaseModel):
    """One result."""

    item: ItemPublic
    score: float
    start: float | None = Field(
        None, description="audio and video: start of the best segment (the moment), seconds"
    )
    end: float | None = Field(
        None, description="audio and video: end of the best segment (the moment), seconds"
    )


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
