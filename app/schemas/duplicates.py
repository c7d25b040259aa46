"""Bodies of /v1/collections/{name}/duplicates: pairs of alike stored items, in pages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_THRESHOLD = 0.98  # bench/duplicates.py: fewest errors, copies vs look-alikes
MAX_LIMIT = 1000


class DuplicatePair(BaseModel):
    """Two stored items at least the threshold alike; ``a`` was stored first."""

    a: str = Field(description="the id of the item stored first (the likely original)")
    b: str = Field(description="the id of the item stored after it")
    score: float = Field(description="cosine similarity of the two, -1 to 1")


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
                }
            ]
        }
    )

    pairs: list[DuplicatePair]
    next_cursor: str | None = Field(
        description="pass it back as `cursor` for the next page; null on the last page"
    )
