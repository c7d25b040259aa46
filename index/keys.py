"""API keys in SQL, and the stores as a key limited to some collections sees them.

A key is 32 random bytes (``secrets``), so its sha256 is all that needs keeping: a slow,
salted password hash guards low-entropy secrets against guessing, and nobody guesses 256
random bits. The plain hash is also what makes a lookup one indexed equality per request,
cheap enough to run on every request, so a deleted key fails at once on every process
(no cache to expire).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from index.collections import CollectionStore
from index.columns import storable
from index.errors import NotFoundError, OutOfScopeError
from index.jobs import JobStore
from index.tables import CollectionRow, JobRow, KeyRow, utcnow

KEY_PREFIX = "mmr_"  # makes a leaked key easy to recognise (secret scanners, logs)


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Keys made through /v1/keys, over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, *, name: str, scope: str, collections: list[str] | None) -> tuple[KeyRow, str]:
        """A new key's row and the key itself (shown once: only its hash is stored)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = KeyRow(
            id=uuid.uuid4().hex,
            name=name,
            scope=scope,
            collections=collections,
            key_hash=key_hash(key),
            created_at=utcnow(),
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row, key

    def find(self, key: str) -> KeyRow | None:
        """The row of a presented key, or None when no such key exists (or it was deleted)."""
        with self.sessions() as session:
            return session.scalar(select(KeyRow).where(KeyRow.key_hash == key_hash(key)))

    def list(self) -> list[KeyRow]:
        """Every key, oldest first."""
        with self.sessions() as session:
            stmt = select(KeyRow).order_by(KeyRow.created_at, KeyRow.id)
            return list(session.scalars(stmt))

    def delete(self, key_id: str) -> None:
        """Revoke a key; NotFoundError when there is none."""
        if not storable(key_id):  # Postgres refuses to even compare a text holding NUL
            raise NotFoundError(f"no key {key_id!r}")
        with self.sessions.begin() as session:
            done = session.execute(delete(KeyRow).where(KeyRow.id == key_id))
        if done.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(f"no key {key_id!r}")


def missing_collection(name: str) -> NotFoundError:
    """What a key limited to other collections hears: the store's answer for a missing one."""
    return NotFoundError(f"no collection named {name!r}")


class ScopedCollections:
    """A CollectionStore that shows only ``allowed`` collections; every other is missing.

    Every route reaches a collection by its name through ``get`` (or lists them), so hiding
    the others here hides their items, aligners and searches too. The rest is the shared
    store itself (its cache included), reached through ``__getattr__``.
    """

    def __init__(self, collections: CollectionStore, allowed: Collection[str]) -> None:
        self._collections = collections
        self._allowed = frozenset(allowed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collections, name)

    def get(self, name: str) -> CollectionRow:
        """The collection, when the key may see it."""
        if name not in self._allowed:
            raise missing_collection(name)
        return self._collections.get(name)

    def create(self, *, name: str, **fields: Any) -> CollectionRow:
        """Create a collection the key names (an admin key limited to collections)."""
        if name not in self._allowed:
            raise OutOfScopeError(
                f"this key may create only the collections it is limited to; {name!r} is not one"
            )
        return self._collections.create(name=name, **fields)

    def list(self) -> list[CollectionRow]:
        """The collections the key may see, oldest first."""
        return [r for r in self._collections.list() if r.name in self._allowed]


class ScopedJobs:
    """A JobStore that shows only the jobs of ``allowed`` collections."""

    def __init__(self, jobs: JobStore, allowed: Collection[str]) -> None:
        self._jobs = jobs
        self._allowed = frozenset(allowed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def create(self, *, collection: str, **fields: Any) -> JobRow:
        """Queue a job of a collection the key may see."""
        if collection not in self._allowed:
            raise missing_collection(collection)
        return self._jobs.create(collection=collection, **fields)

    def get(self, job_id: str) -> JobRow:
        """One job of the key's collections; any other is missing, as JobStore says it."""
        row = self._jobs.get(job_id)
        if row.collection not in self._allowed:
            raise NotFoundError(f"no job {job_id!r}")
        return row

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a job of the key's collections."""
        self.get(job_id)
        return self._jobs.cancel(job_id)

    def list(
        self, *, collection: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[JobRow]:
        """Jobs of the key's collections, newest first (JobStore's order)."""
        names = self._allowed if collection is None else self._allowed & {collection}
        rows = [
            row
            for name in names
            for row in self._jobs.list(collection=name, status=status, limit=limit)
        ]
        rows.sort(key=lambda r: r.id)
        rows.sort(key=lambda r: r.created_at, reverse=True)
        return rows[:limit]
