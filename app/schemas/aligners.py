"""Bodies of /v1/collections/{name}/aligners: a collection's versions of aligner heads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AlignerPublic(BaseModel):
    """One version of a collection's aligner heads."""

    version: int
    active: bool
    sha256: str
    heads: dict[str, dict[str, str | int]] = Field(
        description="per modality: kind, in_dim, out_dim and the encoder it takes"
    )
    meta: dict[str, Any] = Field(description="how the version was made (and its metrics)")
    created_at: datetime


class AlignerList(BaseModel):
    """A collection's aligner versions, oldest first."""

    active: int
    aligners: list[AlignerPublic]
