"""Bodies of /v1/jobs: fine-tune, reindex, migrate and duplicates jobs, and where they stand."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.collections import IndexSettings
from app.schemas.common import (
    AUDIO_ID_PATTERN,
    MODEL_ID_PATTERN,
    CollectionName,
    ItemId,
    Modality,
    NoBool,
)
from app.schemas.duplicates import DEFAULT_THRESHOLD

# Explicit fine-tune pairs: a job body is stored in SQL and read by every listing.
MAX_JOB_PAIRS = 50_000
MAX_JOB_PAIRS_CHARS = 2_000_000


class FinetuneJobCreate(BaseModel):
    """A fine-tune of a collection's aligner heads on pairs of its items."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "finetune", "collection": "photos", "pair_key": "group"},
                {
                    "type": "finetune",
                    "collection": "francais",
                    "pair_key": "group",
                    "anchor_tolerance": 0.05,
                },
                {
                    "type": "finetune",
                    "collection": "photos",
                    "pairs": [["cat-1.jpg", "cat-1-caption"], ["dog-7.jpg", "dog-7-caption"]],
                    "activate": "always",
                },
            ]
        },
    )
    type: Literal["finetune"]
    collection: CollectionName
    pair_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="items sharing a value under this metadata key are pairs",
    )
    pairs: list[tuple[ItemId, ItemId]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_JOB_PAIRS,
        description=f"explicit item-id pairs (at most {MAX_JOB_PAIRS}, "
        f"{MAX_JOB_PAIRS_CHARS:,} characters of ids in all); listings show their count",
    )
    activate: Literal["if_better", "always", "never"] = Field(
        "if_better",
        description="`if_better`: swap the new version in when its held-out recall on the "
        "pairs is better and retrieval on the anchors stayed within `anchor_tolerance`",
    )
    holdout: Annotated[float, NoBool] = Field(
        0.2, gt=0.0, lt=0.9, description="share of pairs held out"
    )
    max_pairs: Annotated[int, NoBool] = Field(50_000, ge=10, le=100_000)
    max_epochs: Annotated[int, NoBool] = Field(200, ge=1, le=10_000)
    max_seconds: Annotated[float, NoBool] = Field(900.0, gt=0, le=86_400)
    patience: Annotated[int, NoBool] = Field(
        30, ge=1, le=10_000, description="epochs without held-out improvement before stopping"
    )
    seed: Annotated[int, NoBool] = Field(0, ge=0, le=2**32 - 1)
    anchor_tolerance: Annotated[float, NoBool] = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="how much recall@5 retrieval on the anchors (what the model already "
        "knew) may lose: no training state that loses more is kept, and `if_better` "
        "activates only within it",
    )

    @model_validator(mode="after")
    def _one_source(self) -> FinetuneJobCreate:
        if (self.pair_key is None) == (self.pairs is None):
            raise ValueError("give exactly one of pair_key or pairs")
        chars = sum(len(a) + len(b) for a, b in self.pairs or ())
        if chars > MAX_JOB_PAIRS_CHARS:
            raise ValueError(
                f"pairs hold {chars:,} characters of ids; the limit is {MAX_JOB_PAIRS_CHARS:,}: "
                "split the pairs over several jobs or pair items by a metadata key (pair_key)"
            )
        return self


class ReindexJobCreate(BaseModel):
    """A rebuild of a collection's index from SQL, swapped in like an activation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "reindex", "collection": "photos"},
                {"type": "reindex", "collection": "photos", "index": {"type": "hnsw"}},
                {"type": "reindex", "collection": "photos", "index": {"type": "auto"}},
            ]
        },
    )
    type: Literal["reindex"]
    collection: CollectionName
    index: IndexSettings | None = Field(
        None,
        description="new index settings (type and parameters); omitted: keep them (an "
        "auto collection's type and settings are chosen again from its size)",
    )


class MigrateJobCreate(BaseModel):
    """A move of a collection to another model: every stored original encoded again into a
    space built beside the live one, then the collection switched in one step."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "migrate", "collection": "photos", "model": "mmr-mini"},
                {
                    "type": "migrate",
                    "collection": "photos",
                    "model": "open_clip:ViT-B-32/laion2b_s34b_b79k",
                    "audio_model": "clap:laion/clap-htsat-unfused",
                    "index": {"type": "hnsw"},
                },
            ]
        },
    )
    type: Literal["migrate"]
    collection: CollectionName
    model: str = Field(
        min_length=1,
        max_length=512,
        pattern=MODEL_ID_PATTERN,
        description="the model to move to (GET /v1/models: syntax); the dimension may change",
    )
    audio_model: str | None = Field(
        None,
        max_length=512,
        pattern=AUDIO_ID_PATTERN,
        description="its audio tower as MMR_AUDIO_MODEL names it (empty: the model's own, "
        "none, clap:...); omitted: the model's own if it has one",
    )
    index: IndexSettings | None = Field(
        None, description="index settings of the new space; omitted: the collection's"
    )


class DuplicatesJobCreate(BaseModel):
    """A duplicates listing of a collection computed in the background, exactly (every pair
    compared), and stored: `GET /v1/collections/{name}/duplicates` pages it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"type": "duplicates", "collection": "photos"},
                {
                    "type": "duplicates",
                    "collection": "photos",
                    "threshold": 0.95,
                    "modality": "image",
                },
            ]
        },
    )
    type: Literal["duplicates"]
    collection: CollectionName
    threshold: Annotated[float, NoBool] = Field(
        DEFAULT_THRESHOLD,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="the least cosine similarity of a pair; the listing answers requests "
        "of this threshold or a higher one",
    )
    modality: Modality | None = Field(
        None, description="only items of this modality; omitted: each modality's pairs"
    )


class MigrationConfirmed(BaseModel):
    """POST /v1/collections/{name}/migration/confirm."""

    collection: str
    model: str = Field(description="the model the collection now uses")
    dropped: list[str] = Field(description="models of the spaces dropped")


JobCreate = Annotated[
    FinetuneJobCreate | ReindexJobCreate | MigrateJobCreate | DuplicatesJobCreate,
    Field(discriminator="type"),
]


class JobPublic(BaseModel):
    """A background job and where it stands."""

    id: str
    type: str
    collection: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: dict[str, Any] = Field(
        description="fraction (0-1) and eta_s while it runs; finetune: epoch, max_epochs, "
        "loss; duplicates: phase (reading, comparing), items, comparisons"
    )
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="finetune: recall@1/5/10 before and after on held-out pairs, the new "
        "aligner version and whether it was activated; migrate: the models and dimensions "
        "before and after, items encoded and reused, passes, seconds, items_per_s; "
        "duplicates: items, pairs, threshold, modality, change_seq, seconds"
    )
    error: str | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobPublic]
