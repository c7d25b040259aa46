"""Bodies of /v1/collections/{name}/duplicates: pairs of alike stored items, in pages."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_THRESHOLD = 0.98  # bench/duplicates.py: fewest errors, copies vs look-alikes
MAX_LIMIT = 1000


class DuplicatePair(BaseModel):
    """Two stored items at least the threshold alike; ``a`` was stored first."""

    a: str = Field(description="the id of the item stored first (the likely original)")
    b: str = Field(description="the id of the item stored after it")
    score: float = Field(description="cosine similarity of the two, -1 to 1")


class StoredListing(BaseModel):
    """Where a page of a stored listing comes from: the duplicates job that computed it."""

    job_id: str = Field(description="the `duplicates` job that computed the listing")
    computed_at: datetime = Field(description="when the job finished computing it")
    threshold: float = Field(description="the job's threshold (at most the request's)")
    modality: str | None = Field(description="the job's modality; null: all of them")
    change_seq: int = Field(description="the collection's change-log position it reflects")
    stale: bool = Field(
        description="true when the collection changed since (items written, or another "
        "model or aligner version): deleted items are left out, pairs of items written "
        "since are missing until another `duplicates` job runs"
    )


class DuplicatePage(BaseModel):
    """One page of pairs, best first (ties by `a`, then `b`, in the order they were stored)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pairs": [
                        {"a": "beach.png", "b": "beach-small.jpg", "score": 0.991},
                        {"a": "dog.png", "b": "dog-cropped.png", "score": 0.962},
                    ],
                    "next_cursor": "eyJzIjogMC45NjIsICJhIjogNCwgImIiOiA5fQ",
                    "stored": None,
                },
                {
                    "pairs": [{"a": "IMG_0001.jpg", "b": "IMG_0001 (1).jpg", "score": 0.999}],
                    "next_cursor": None,
                    "stored": {
                        "job_id": "5f0c2a8e9b7d4c1e8a6f3b2d1c0e9f8a",
                        "computed_at": "2026-12-06T16:00:00Z",
                        "threshold": 0.98,
                        "modality": "image",
                        "change_seq": 120431,
                        "stale": False,
                    },
                },
            ]
        }
    )

    pairs: list[DuplicatePair]
    next_cursor: str | None = Field(
        description="pass it back as `cursor` for the next page; null on the last page"
    )
    stored: StoredListing | None = Field(
        None,
        description="null: computed for this request; else the stored listing of a "
        "`duplicates` job it comes from (a collection too large to list within a request)",
    )
