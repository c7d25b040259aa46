"""Bodies of /v1/keys: API keys made here, with their scope and collections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import CollectionName

Scope = Literal["read", "write", "admin"]
# A label for people: any text but control characters (which SQL may refuse, NUL on Postgres).
KeyName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,255}$")]
# One key as the API shows it; a new key's answer adds its secret.
KEY_EXAMPLE: dict[str, Any] = {
    "id": "3f2b8c1e9a7d4e6f8b0c2d4e6f8a0b1c",
    "name": "photo app",
    "scope": "write",
    "collections": ["photos"],
    "created_at": "2026-12-05T07:00:00Z",
}


class KeyCreate(BaseModel):
    """POST /v1/keys."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "photo app", "scope": "write", "collections": ["photos"]},
                {"name": "dashboards", "scope": "read", "collections": None},
            ]
        },
    )
    name: KeyName = Field(description="who or what uses the key (for people; not unique)")
    scope: Scope = Field(
        description="read: GET routes, search, embed; write: also items, jobs and aligner "
        "activation; admin: everything, collections and keys included"
    )
    collections: list[CollectionName] | None = Field(
        default=None,
        max_length=1000,
        description="the only collections the key may see (others answer 404); null: all",
    )


class KeyPublic(BaseModel):
    """A key without its secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [KEY_EXAMPLE]})
    id: str
    name: str
    scope: Scope
    collections: list[str] | None
    created_at: datetime


class KeyCreated(KeyPublic):
    """A new key: ``key`` is shown in this answer only (the server keeps its hash)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**KEY_EXAMPLE, "key": "mmr_Vq3b0xQ2m9Zr7d6cYw1JkP4sT8uHn5aLfE0gRiOtC2M"}]
        }
    )
    key: str = Field(description="send as 'Authorization: Bearer <key>'; not shown again")


class KeyList(BaseModel):
    """GET /v1/keys."""

    keys: list[KeyPublic]
