"""Collections in SQL: one embedding space each (model, aligner version, dimension, index)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from index.columns import storable
from index.db import no_time_limit
from index.errors import ConflictError, JobEndedError, NotFoundError
from index.items import lock_collection
from index.tables import (
    AlignerRow,
    ChangeRow,
    CollectionRow,
    DuplicateListingRow,
    ItemRow,
    ItemTagRow,
    JobRow,
    ReplicaPositionRow,
    SpaceAlignerRow,
    SpaceRow,
    SpaceVectorRow,
    utcnow,
)
from index.wakeup import announce


class CollectionCache:
    """Collection rows by name, kept for ``ttl_s``: read on every request, changed rarely.

    Every store that changes a collection row drops them at once (the stores of one
    :class:`index.stores.Stores` share this cache); another process's changes (a worker
    activating a new aligner version) show within the TTL.
    """

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._by_name: dict[str, tuple[float, CollectionRow]] = {}

    def get(self, name: str, now: float) -> CollectionRow | None:
        """The row kept under this name, unless it is older than the TTL at ``now``."""
        kept = self._by_name.get(name)
        if kept is not None and now - kept[0] < self.ttl_s:
            return kept[1]
        return None

    def keep(self, name: str, now: float, row: CollectionRow) -> None:
        """Keep a row read from SQL at ``now``."""
        self._by_name[name] = (now, row)

    def forget(self) -> None:
        """Drop every kept row: a collection row changed."""
        self._by_name = {}


class CollectionStore:
    """Collections over any SQLAlchemy engine; lookups by name go through the cache."""

    def __init__(self, sessions: sessionmaker[Session], cache: CollectionCache) -> None:
        self.sessions = sessions
        self.cache = cache

    def create(
        self,
        *,
        name: str,
        model: str,
        audio_model: str | None,
        dim: int,
        index_type: str,
        index_params: dict[str, Any],
        aligner: bytes,
        aligner_meta: dict[str, Any],
    ) -> CollectionRow:
        """Insert a collection with its first aligner (version 1, active) in one transaction;
        ConflictError when the name is taken."""
        row = CollectionRow(
            name=name,
            model=model,
            audio_model=audio_model,
            dim=dim,
            aligner_version=1,
            index_type=index_type,
            index_params=index_params,
            created_at=utcnow(),
        )
        self.cache.forget()
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.flush()
                session.add(AlignerRow.of(row.id, 1, aligner, aligner_meta))
        except IntegrityError as exc:
            raise ConflictError(f"a collection named {name!r} already exists") from exc
        return row

    def get(self, name: str) -> CollectionRow:
        """The collection by name; NotFoundError when there is none."""
        now = time.monotonic()
        kept = self.cache.get(name, now)
        if kept is not None:
            return kept
        row = None
        if storable(name):
            with self.sessions() as session:
                row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
        if row is None:
            raise NotFoundError(f"no collection named {name!r}")
        self.cache.keep(name, now, row)
        return row

    def get_by_id(self, collection_id: int) -> CollectionRow:
        """The collection by key; NotFoundError when it is gone."""
        with self.sessions() as session:
            row = session.get(CollectionRow, collection_id)
        if row is None:
            raise NotFoundError("the collection was deleted")
        return row

    def set_space(
        self,
        *,
        collection_id: int,
        aligner_version: int | None = None,
        bump_epoch: bool = False,
        index: tuple[str, dict[str, Any]] | None = None,
        job_id: str | None = None,
        worker: str | None = None,
    ) -> CollectionRow:
        """Name another active aligner version and/or a new index epoch, with new index
        settings (type, params) if given (a swap follows). ``job_id``: only while that job
        is still running (by ``worker``, when given), asked under the collection's lock in
        the same transaction, so a cancel either lands first (JobEndedError, nothing
        changes) or waits for this one."""
        with self.sessions.begin() as session:
            if job_id is not None:
                lock_collection(session, collection_id)
                found = session.execute(
                    select(JobRow.status, JobRow.worker)
                    .where(JobRow.id == job_id)
                    .with_for_update()
                ).first()
                status, runner = (None, None) if found is None else tuple(found)
                if status != "running" or (worker is not None and runner != worker):
                    raise JobEndedError(f"job {job_id} is {status or 'gone'}: nothing activated")
            row = session.get(CollectionRow, collection_id)
            if row is None:
                raise NotFoundError("the collection was deleted")
            if aligner_version is not None:
                row.aligner_version = aligner_version
            if index is not None:
                row.index_type, row.index_params = index
            if bump_epoch or index is not None:
                row.index_epoch += 1
            announce(session)  # every process builds the new space off the request path
        self.cache.forget()
        return row

    def delete(self, collection_id: int) -> None:
        """Remove a collection with its items, tags, aligners, change log and other spaces
        (however many: without the statement time limit)."""
        with self.sessions.begin() as session, no_time_limit(session.connection()):
            item_pks = select(ItemRow.pk).where(ItemRow.collection_id == collection_id)
            session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk.in_(item_pks)))
            for side in (SpaceVectorRow, SpaceAlignerRow, SpaceRow):
                session.execute(delete(side).where(side.collection_id == collection_id))
            session.execute(delete(ItemRow).where(ItemRow.collection_id == collection_id))
            session.execute(delete(ChangeRow).where(ChangeRow.collection_id == collection_id))
            session.execute(
                delete(ReplicaPositionRow).where(ReplicaPositionRow.collection_id == collection_id)
            )
            session.execute(delete(AlignerRow).where(AlignerRow.collection_id == collection_id))
            session.execute(
                delete(DuplicateListingRow).where(
                    DuplicateListingRow.collection_id == collection_id
                )
            )
            session.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))
            announce(session)
        self.cache.forget()

    def list(self) -> list[CollectionRow]:
        """All collections, oldest first."""
        with self.sessions() as session:
            return list(session.scalars(select(CollectionRow).order_by(CollectionRow.id)))
