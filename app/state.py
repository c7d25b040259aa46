"""The heavy objects of a running service, built once in the lifespan and shared."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from app.errors import NotReady
from app.services.embedding import Embedder
from app.settings import Settings
from index.blobs import BlobStore
from index.jobs import JobStore
from index.manager import IndexManager
from index.store import MetadataStore


@dataclass
class Services:
    """Everything a request may need, typed."""

    settings: Settings
    engine: Engine
    store: MetadataStore
    blobs: BlobStore
    indexes: IndexManager
    embedder: Embedder
    jobs: JobStore
    warnings: list[str] = field(default_factory=list)
    # Set when a job is queued: an in-process worker starts on it without waiting a poll.
    worker_wakeup: threading.Event = field(default_factory=threading.Event)


async def get_services(request: Request) -> Services:
    """The running service's objects; 503 while start-up has not finished.

    Async (it never blocks): FastAPI runs a sync dependency in the thread pool, a thread
    hop per request that a search of a million vectors would spend more time on than FAISS.
    """
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the service is starting; try again shortly")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
