"""API keys made through /v1/keys: create, list, revoke."""

from __future__ import annotations

from app.schemas.keys import KeyCreate, KeyCreated, KeyPublic
from app.services.views import aware
from app.settings import Settings
from index.errors import ConflictError
from index.keys import KeyStore
from index.tables import KeyRow


def create_key(*, settings: Settings, keys: KeyStore, body: KeyCreate) -> KeyCreated:
    """A new key, shown this once; 409 while auth is off (it would not be checked)."""
    if not settings.keys:
        raise ConflictError(
            "API keys are off (MMR_API_KEYS is empty), so a key made here would not be "
            "checked; set MMR_API_KEYS to turn keys on, then make keys with one of those"
        )
    collections = None if body.collections is None else sorted(set(body.collections))
    row, key = keys.create(name=body.name, scope=body.scope, collections=collections)
    return KeyCreated(**key_public(row).model_dump(), key=key)


def list_keys(*, keys: KeyStore) -> list[KeyPublic]:
    """Every key made through /v1/keys, oldest first, without secrets."""
    return [key_public(row) for row in keys.list()]


def delete_key(*, keys: KeyStore, key_id: str) -> None:
    """Revoke a key: the next request with it, on any process, gets 401."""
    keys.delete(key_id)


def key_public(row: KeyRow) -> KeyPublic:
    """A key as the API shows it (never the key itself, which is not stored)."""
    return KeyPublic(
        id=row.id,
        name=row.name,
        scope=row.scope,
        collections=row.collections,
        created_at=aware(row.created_at),
    )
