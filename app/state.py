"""The heavy objects of a running service, built once in the lifespan and shared."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from app.auth import Principal, principal_of
from app.errors import NotReady
from app.services.embedding import Embedder
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
    embedder: Embedder
    warnings: list[str] = field(default_factory=list)
    # Set when a job is queued: an in-process worker starts on it without waiting a poll.
    worker_wakeup: threading.Event = field(default_factory=threading.Event)

    def seen_by(self, principal: Principal | None) -> Services:
        """These services as a key sees them: a key limited to collections gets stores
        in which every other collection (and its items, aligners and jobs) is missing."""
        if principal is None or principal.collections is None:
            return self
        return dataclasses.replace(self, stores=self.stores.limited_to(principal.collections))


async def get_services(request: Request) -> Services:
    """The running service's objects; 503 while start-up has not finished.

    Async (it never blocks): FastAPI runs a sync dependency in the thread pool, a thread
    hop per request that a search of a million vectors would spend more time on than FAISS.
    """
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the service is starting; try again shortly")
    return services.seen_by(principal_of(request))


ServicesDep = Annotated[Services, Depends(get_services)]
