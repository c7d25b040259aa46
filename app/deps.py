"""Typed dependencies: one ``Annotated`` alias per thing a route may touch, so a route's
signature says what it uses (as the FastAPI full-stack template's ``api/deps.py``).

Each is read from the running service's objects (``app.state.Services``, built in the
lifespan); each answers 503 while start-up has not finished. The SQL stores come as the
request's key sees them (``Services.stores_seen_by``): for a key limited to collections,
every other collection (and its items, aligners and jobs) is missing.

Every function here is async and takes only the request: FastAPI runs a sync dependency in
the thread pool (a thread hop per request, which a search of a million vectors would spend
more time on than FAISS), and solves a dependency's own dependencies again for every
dependency that names them, so these read what they need directly rather than from one
another.
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request

from app.auth import principal_of
from app.errors import NotReady
from app.services.duplicates import DuplicateFinder
from app.services.embedding import Embedder
from app.services.pool import ModelPool
from app.settings import Settings
from app.state import Services
from index.aligners import AlignerStore
from index.blobs import BlobStore
from index.collections import CollectionStore
from index.items import ItemStore
from index.jobs import JobStore
from index.keys import KeyStore
from index.listings import ListingStore
from index.manager import IndexManager
from index.spaces import SpaceStore
from index.stores import Stores
from models.encoders.aligner import Aligner


def running(request: Request) -> Services:
    """The running service's objects; 503 while start-up has not finished."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the service is starting; try again shortly")
    return services


def stores_of(request: Request) -> Stores:
    """The SQL stores as the request's key sees them."""
    return running(request).stores_seen_by(principal_of(request))


async def get_settings(request: Request) -> Settings:
    """The settings the service started with."""
    return running(request).settings


async def get_collection_store(request: Request) -> CollectionStore:
    """The collections the key may see."""
    return stores_of(request).collections


async def get_item_store(request: Request) -> ItemStore:
    """Items, reached through a collection row the key may see."""
    return stores_of(request).items


async def get_aligner_store(request: Request) -> AlignerStore:
    """Aligner versions, reached through a collection row the key may see."""
    return stores_of(request).aligners


async def get_job_store(request: Request) -> JobStore:
    """The jobs of the collections the key may see."""
    return stores_of(request).jobs


async def get_space_store(request: Request) -> SpaceStore:
    """Spaces a migration builds or left, reached through a collection row the key may see."""
    return stores_of(request).spaces


async def get_listing_store(request: Request) -> ListingStore:
    """Duplicates listings jobs stored, reached through a collection row the key may see."""
    return stores_of(request).listings


async def get_key_store(request: Request) -> KeyStore:
    """API keys made through /v1/keys."""
    return stores_of(request).keys


async def get_indexes(request: Request) -> IndexManager[Aligner]:
    """The live FAISS index of every collection."""
    return running(request).indexes


async def get_embedder(request: Request) -> Embedder:
    """The encoders of this process and the aligner new collections start from."""
    return running(request).embedder


async def get_models(request: Request) -> ModelPool:
    """Every model this process serves, each collection's loaded on demand."""
    return running(request).models


async def get_blobs(request: Request) -> BlobStore:
    """The uploaded originals, by sha256."""
    return running(request).blobs


async def get_duplicate_finder(request: Request) -> DuplicateFinder:
    """The duplicates listings this process computed lately, and its one-at-a-time gate."""
    return running(request).duplicates


async def get_worker_wakeup(request: Request) -> threading.Event:
    """Set to start an in-process worker on a new job without waiting for its poll."""
    return running(request).worker_wakeup


SettingsDep = Annotated[Settings, Depends(get_settings)]
CollectionStoreDep = Annotated[CollectionStore, Depends(get_collection_store)]
ItemStoreDep = Annotated[ItemStore, Depends(get_item_store)]
AlignerStoreDep = Annotated[AlignerStore, Depends(get_aligner_store)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
SpaceStoreDep = Annotated[SpaceStore, Depends(get_space_store)]
KeyStoreDep = Annotated[KeyStore, Depends(get_key_store)]
ListingStoreDep = Annotated[ListingStore, Depends(get_listing_store)]
IndexesDep = Annotated[IndexManager[Aligner], Depends(get_indexes)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
ModelsDep = Annotated[ModelPool, Depends(get_models)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
DuplicateFinderDep = Annotated[DuplicateFinder, Depends(get_duplicate_finder)]
WorkerWakeupDep = Annotated[threading.Event, Depends(get_worker_wakeup)]
