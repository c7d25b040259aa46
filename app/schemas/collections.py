"""Bodies of /v1/collections: a collection, its embedding space and its index settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.common import MODEL_ID_PATTERN, CollectionName, NoBool
from index.spec import TYPE_FIELDS


class IndexSettings(BaseModel):
    """How a collection's vectors are indexed: chosen from its size (`auto`, the default),
    exactly (`flat`) or approximately.

    `auto` searches exactly while the collection is small and moves to `hnsw` with settings
    derived from its size as it grows (docs/api.md, Index types); the index in use is shown in
    the collection's `index`. `hnsw` is a graph (fast at any size, more memory, deletions
    masked until a reindex);
    `ivf` clusters vectors into lists trained on the collection's own vectors (searched
    exactly until it holds enough to train), optionally storing 8-bit (`sq8`) or product
    quantised (`pq`) codes. Omitted fields take the defaults shown.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "auto"},
                {"type": "flat"},
                {"type": "hnsw", "m": 32, "ef_construction": 80, "ef_search": 64},
                {"type": "ivf", "nprobe": 16, "quantizer": "sq8"},
            ]
        },
    )
    type: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto",
        description="auto = chosen from the collection's size (exact while small, hnsw "
        "as it grows); flat = exact search",
    )
    m: Annotated[int | None, NoBool] = Field(
        None, ge=4, le=128, description="hnsw: links per node (32)"
    )
    ef_construction: Annotated[int | None, NoBool] = Field(
        None, ge=8, le=2048, description="hnsw: candidates while inserting (80)"
    )
    ef_search: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=4096, description="hnsw: candidates while searching (64; at least k)"
    )
    nlist: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=65536, description="ivf: lists (default: about 4*sqrt(n) at training)"
    )
    nprobe: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=65536, description="ivf: lists scanned (16)"
    )
    quantizer: Literal["flat", "sq8", "pq"] | None = Field(
        None, description="ivf: full vectors (flat), 1 byte per dimension (sq8), or pq codes"
    )
    pq_m: Annotated[int | None, NoBool] = Field(
        None, ge=1, le=1024, description="ivf + pq: bytes per vector, divides the dim (64)"
    )
    on_disk: bool | None = Field(
        None,
        description="ivf: search the lists in place in the snapshot file, mapped from disk "
        "(memory holds the centroids, the id map and the writes since the last snapshot; "
        "false)",
    )

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> IndexSettings:
        for owner, names in TYPE_FIELDS.items():
            given = [n for n in names if getattr(self, n) is not None]
            if given and owner != self.type:
                raise ValueError(
                    f"{given[0]} applies to {owner} indexes, not {self.type}: give "
                    f'"type": "{owner}" to set it'
                )
        if self.pq_m is not None and self.quantizer != "pq":
            raise ValueError('pq_m applies with "quantizer": "pq"')
        return self

    def params(self) -> dict[str, Any]:
        """The fields given (the rest take the type's defaults)."""
        return self.model_dump(exclude={"type"}, exclude_none=True)


class CollectionCreate(BaseModel):
    """POST /v1/collections."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "photos"},
                {"name": "scratch", "index": {"type": "flat"}},
                {"name": "archive", "index": {"type": "ivf", "quantizer": "sq8"}},
                {"name": "sketches", "model": "mmr-mini"},
            ]
        },
    )
    name: CollectionName
    index: IndexSettings = Field(default_factory=IndexSettings)
    model: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        pattern=MODEL_ID_PATTERN,
        description="the model of the collection's space (GET /v1/models: syntax), with its "
        "own audio tower if it has one; omitted: the server's MMR_MODEL. Loaded on demand "
        "within MMR_MODEL_MEMORY_MB; one that cannot be loaded is refused with 409",
    )


class IndexInfo(BaseModel):
    """A collection's live index."""

    type: str
    params: dict[str, Any] = Field(
        default_factory=dict, description="the type's settings (ivf: nlist once trained)"
    )
    size: int = Field(description="items in the index")
    vectors: int = Field(0, description="vectors (recordings have one per segment)")
    deleted: int = Field(0, description="deleted vectors still held (masked); a reindex drops them")
    trained: bool = Field(True, description="false while an ivf index still searches exactly")
    bytes: int = Field(0, description="estimated memory of the index")


class SpaceInfo(BaseModel):
    """A space beside the collection's own: one a migrate job builds, or one a migration
    left (kept for a rollback until the switch is confirmed)."""

    model: str
    audio_model: str | None
    dim: int
    state: Literal["building", "kept"]
    job_id: str | None = Field(description="the migrate job that builds or left it")
    items: int = Field(description="items it holds vectors of")
    created_at: datetime


class CollectionPublic(BaseModel):
    """A collection and its embedding space."""

    name: str
    model: str
    dim: int
    index_type: str = Field(
        description="the index type the collection asked for: auto (chosen from its size; "
        "the type in use is index.type), flat, hnsw or ivf"
    )
    aligner_version: int = Field(description="the active aligner version (heads per modality)")
    audio_model: str | None = Field(None, description="the audio tower behind the audio head")
    count: int
    index: IndexInfo
    compatible: bool = Field(
        description="false when this server could not load the collection's model"
    )
    created_at: datetime
    other_spaces: list[SpaceInfo] = Field(
        default_factory=list,
        description="GET of one collection only: the space a migrate job is building, and "
        "the one a migration left until it is confirmed (POST .../migration/confirm) or "
        "rolled back (POST .../migration/rollback)",
    )


class CollectionList(BaseModel):
    """GET /v1/collections."""

    collections: list[CollectionPublic]
