"""The heavy objects of a running service, built once in the lifespan and shared; the
routes get them one by one through app.deps."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from app.auth import Principal
from app.services.duplicates import DuplicateFinder
from app.services.embedding import Embedder
from app.services.pool import ModelPool
from app.settings import Settings
from index.blobs import BlobStore
from index.manager import IndexManager
from index.stores import Stores
from models.encoders.aligner import Aligner


@dataclass
class Services:
    """Everything a request may need, typed."""

    settings: Settings
    engine: Engine
    # SQL, one store per resource: collections, items, aligners, changes, jobs, keys.
    stores: Stores
    blobs: BlobStore
    indexes: IndexManager[Aligner]
    # The model this process started with (MMR_MODEL): new collections get it.
    embedder: Embedder
    # Every model this process serves: the one above and those its collections record.
    models: ModelPool
    warnings: list[str] = field(default_factory=list)
    # Set when a job is queued: an in-process worker starts on it without waiting a poll.
    worker_wakeup: threading.Event = field(default_factory=threading.Event)
    # Duplicates listings computed lately, per collection state (app.services.duplicates).
    duplicates: DuplicateFinder = field(default_factory=DuplicateFinder)

    def seen_by(self, principal: Principal | None) -> Services:
        """These services as a key sees them (see ``stores_seen_by``)."""
        stores = self.stores_seen_by(principal)
        return self if stores is self.stores else dataclasses.replace(self, stores=stores)

    def stores_seen_by(self, principal: Principal | None) -> Stores:
        """The stores as a key sees them: for a key limited to collections, every other
        collection (and its items, aligners and jobs) is missing."""
        if principal is None or principal.collections is None:
            return self.stores
        return self.stores.limited_to(principal.collections)
