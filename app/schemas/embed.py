"""Bodies of /v1/embed: vectors on demand, nothing stored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import CollectionName, InputText


class EmbedOptions(BaseModel):
    """What /v1/embed takes besides the inputs (multipart: form fields)."""

    model_config = ConfigDict(extra="forbid")
    collection: CollectionName | None = Field(
        None, description="embed with this collection's active aligner heads"
    )


class EmbedRequest(EmbedOptions):
    """POST /v1/embed as JSON."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["a cat", "a dog"]}]}
    )
    texts: list[InputText] = Field(min_length=1)


class EmbedResponse(BaseModel):
    """Vectors in the shared space, L2-normalised."""

    model: str
    dim: int
    aligner_version: int | None = Field(
        None, description="the collection's aligner version used; null: a new collection's heads"
    )
    embeddings: list[list[float]]
