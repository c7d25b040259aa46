"""Bodies of /v1/collections/{name}/items: items, their pages and batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import ErrorDetail, InputText, ItemId, Metadata


class TextItemCreate(BaseModel):
    """A text item as JSON."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "a dog barking in the rain", "metadata": {"source": "notes"}}]
        },
    )
    text: InputText
    id: ItemId | None = None
    metadata: Metadata = Field(default_factory=dict)


class TextBatch(BaseModel):
    """POST .../items/batch as JSON: a list of text items."""

    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] = Field(min_length=1)


class ItemPublic(BaseModel):
    """An item as clients see it."""

    id: str
    collection: str
    modality: str
    metadata: Metadata
    sha256: str
    content_type: str
    size_bytes: int
    text: str | None = None
    duration: float | None = Field(None, description="audio and video: seconds")
    segments: int | None = Field(
        None, description="audio and video: how many indexed segments (frames and sound)"
    )
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of items, oldest first."""

    items: list[ItemPublic]
    next_cursor: str | None


class ItemPatch(BaseModel):
    """PATCH an item's metadata (replaces it; the vector stays)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"metadata": {}}]})
    metadata: Metadata


class BatchEntry(BaseModel):
    """One batch item's outcome, at its input position."""

    status: int
    item: ItemPublic | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    """POST .../items/batch."""

    results: list[BatchEntry]
