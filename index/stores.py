"""Every SQL store of one database, built together: they share its sessions and the
collection cache (a change to a collection row through any of them drops it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from index.aligners import AlignerStore
from index.changes import ChangeLog
from index.collections import CollectionCache, CollectionStore
from index.db import engine_of
from index.items import ItemStore
from index.jobs import JobStore
from index.keys import KeyStore, ScopedCollections, ScopedJobs
from index.listings import ListingStore
from index.spaces import SpaceStore


@dataclass(frozen=True)
class Stores:
    """One store per resource: ``collections``, ``items`` (with their tags), ``aligners``,
    ``changes`` (the change log), ``jobs``, ``keys``, ``spaces`` (migrations) and
    ``listings`` (duplicates listings jobs stored)."""

    sessions: sessionmaker[Session]
    engine: Engine
    collections: CollectionStore
    items: ItemStore
    aligners: AlignerStore
    changes: ChangeLog
    jobs: JobStore
    keys: KeyStore
    spaces: SpaceStore
    listings: ListingStore

    @classmethod
    def over(cls, sessions: sessionmaker[Session], *, collection_ttl_s: float = 0.5) -> Stores:
        """The stores of the database ``sessions`` are bound to; collection rows looked up
        by name are kept for ``collection_ttl_s`` (CollectionCache)."""
        cache = CollectionCache(collection_ttl_s)
        return cls(
            sessions=sessions,
            engine=engine_of(sessions),
            collections=CollectionStore(sessions, cache),
            items=ItemStore(sessions),
            aligners=AlignerStore(sessions, cache),
            changes=ChangeLog(sessions, cache),
            jobs=JobStore(sessions),
            keys=KeyStore(sessions),
            spaces=SpaceStore(sessions, cache),
            listings=ListingStore(sessions),
        )

    def reads_without_waiting(self) -> bool:
        """Whether a read here now finds a connection without waiting for one: the
        embedded SQLite database (no round trip; WAL readers never wait for writers) with
        fewer connections in use than the pool keeps."""
        if self.engine.dialect.name != "sqlite":
            return False
        pool = self.engine.pool
        return isinstance(pool, QueuePool) and pool.checkedout() < pool.size()

    def limited_to(self, allowed: Collection[str]) -> Stores:
        """These stores as a key limited to ``allowed`` collections sees them: every other
        collection (and its items, aligners and jobs) is missing."""
        return dataclasses.replace(
            self,
            collections=cast(CollectionStore, ScopedCollections(self.collections, allowed)),
            jobs=cast(JobStore, ScopedJobs(self.jobs, allowed)),
        )
