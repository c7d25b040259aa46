"""Start-up and shutdown: build the heavy objects once, snapshot indexes on the way out."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.logs import mask_url
from app.memory import Trimmer, trim
from app.services import autoindex
from app.services.aligners import active_aligner
from app.services.embedding import Embedder
from app.services.pool import ModelPool
from app.settings import Settings
from app.state import Services
from app.worker import start_in_process
from index.blobs import BlobStore
from index.builds import BuildProcess
from index.db import make_engine, make_sessionmaker, migrate
from index.faults import run_resilient
from index.manager import IndexManager
from index.stores import Stores
from index.vector_index import configure_faiss_threads
from index.wakeup import Wakeup
from models.encoders.registry import LoadedModel, load_model
from models.errors import ModelLoadError
from models.runtime.batcher import BatchConfig
from models.runtime.threads import configure_torch_threads, in_thread_with_threads
from models.training.bridge import default_aligner

log = logging.getLogger("mmr")

SNAPSHOT_CHECK_S = 5.0
SNAPSHOT_MAX_AGE_S = 60.0
TRASH_SWEEP_S = 60.0  # how often deleted originals past their grace period are removed
TRIM_CHECK_S = 1.0  # how often the memory trimmer looks at the process's memory (app.memory)


def load_encoder(settings: Settings) -> LoadedModel:
    """The model as ``settings`` name it, in the precision they ask for (``auto``: the
    verdict kept in the model cache, or the probe's)."""
    return load_model(
        settings.model,
        audio_model=settings.audio_model,
        device=settings.device,
        cache_dir=settings.data_dir / "models",
        precision=settings.precision,
        batching=BatchConfig(
            max_batch=settings.batch_size,
            max_wait_ms=settings.batch_wait_ms,
            max_queue=settings.batch_queue,
            streams=settings.batch_streams,
        ),
    )


def embedder_loader(settings: Settings) -> Callable[[str, str], Embedder]:
    """How the model pool loads a model a collection records: as ``load_encoder`` does for
    ``MMR_MODEL``, with the audio tower ``audio`` names (as MMR_AUDIO_MODEL would) and the
    aligner new collections of it start from."""

    def load(model: str, audio: str) -> Embedder:
        named = settings.model_copy(update={"model": model, "audio_model": audio})
        loaded = in_thread_with_threads(lambda: load_encoder(named))
        aligner = in_thread_with_threads(
            lambda: default_aligner(
                loaded.encoder,
                loaded.audio,
                head_file=None,
                cache_dir=settings.data_dir / "aligners",
            )
        )
        return Embedder(loaded, aligner)

    return load


def settle_precision(settings: Settings) -> None:
    """Probe ``MMR_PRECISION=auto`` once, in a process of its own that exits (the caller
    keeps no model), leaving the verdict in the model cache: processes that start together
    (``mmr serve --workers``) then all read it, instead of each probing while the others
    take the same cores, and maybe choosing differently."""
    if settings.precision != "auto":
        return
    child = multiprocessing.get_context("spawn").Process(
        target=_probe_precision, args=(settings,), name="mmr-precision"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        log.warning("the precision probe exited with %s: each process probes", child.exitcode)


def _probe_precision(settings: Settings) -> None:
    configure_torch_threads(settings.torch_threads)
    in_thread_with_threads(lambda: load_encoder(settings))


def build_services(settings: Settings, *, holds_indexes: bool = True) -> Services:
    """Database (migrated), blob store, model and every collection's index.

    A worker process (``holds_indexes=False``) loads no index: it changes SQL (new aligner
    versions, activations, reindex epochs) and the API process swaps its indexes to match.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_torch_threads(settings.torch_threads)
    configure_faiss_threads(settings.faiss_threads)
    engine = make_engine(settings.resolved_database_url, statement_timeout_s=settings.sql_timeout_s)
    migrate(engine)
    stores = Stores.over(make_sessionmaker(engine))
    try:
        # Loading, the precision probe and a first start's audio bootstrap run torch on every
        # thread in a thread that ends with them (models.runtime.threads.configure_torch_threads).
        loaded = in_thread_with_threads(lambda: load_encoder(settings))
        aligner = in_thread_with_threads(
            lambda: default_aligner(
                loaded.encoder,
                loaded.audio,
                head_file=settings.audio_head,
                cache_dir=settings.data_dir / "aligners",
            )
        )
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        engine.dispose()
        raise
    indexes = IndexManager(
        collections=stores.collections,
        items=stores.items,
        changes=stores.changes,
        aligner_of=lambda row: active_aligner(row, store=stores.aligners),
        root=settings.data_dir / "indexes",
        follow=holds_indexes,
        # Its name in the log's positions: pruning keeps what it has not applied yet.
        replica=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        if holds_indexes
        else "",
        released=trim,
        # Large collections' indexes built in a child process: what a build leaves in the
        # allocator's arenas stays out of the server (index.builds).
        builds=BuildProcess.over(engine, settings.data_dir / "indexes", at=settings.build_apart_at)
        if settings.build_apart_at
        else None,
    )
    if holds_indexes:
        indexes.load_all()
    embedder = Embedder(loaded, aligner)
    services = Services(
        settings=settings,
        engine=engine,
        stores=stores,
        blobs=BlobStore(settings.data_dir / "blobs"),
        indexes=indexes,
        embedder=embedder,
        models=ModelPool(
            embedder, load=embedder_loader(settings), budget_mb=settings.model_memory_mb
        ),
    )
    if loaded.warning:
        services.warnings.append(loaded.warning)
    return services


def log_start(services: Services, *, jobs: str) -> None:
    """The start-up block: what this process serves and where its state lives, then any
    warnings (uvicorn's own line with the listening address follows when it serves)."""
    settings, embedder = services.settings, services.embedder
    loaded, encoder = embedder.loaded, embedder.encoder
    audio = embedder.audio_model_id or "none"
    model = (
        f"{encoder.model_id} (dim {encoder.dim}; {', '.join(embedder.modalities)}; audio {audio})"
    )
    if loaded.fallback:
        model += f": the offline fallback of MMR_MODEL={loaded.requested}"
    precision = loaded.precision
    log.info("model      %s", model)
    log.info(
        "precision  %s (MMR_PRECISION=%s: %s)",
        precision.name,
        precision.requested,
        precision.reason,
    )
    log.info("device     %s", encoder.device)
    log.info("database   %s", mask_url(settings.resolved_database_url))
    log.info("data dir   %s", settings.data_dir.resolve())
    log.info("jobs       %s", jobs)
    for warning in services.warnings:
        log.warning("%s", warning)


def _snapshot_loop(services: Services, stop: threading.Event) -> None:
    # A full disk or a database outage must not kill the thread: SQL keeps every change
    # until a snapshot is durable, and the loop retries with backoff until it is.
    run_resilient(
        "index snapshot",
        lambda: services.indexes.snapshot_due(
            every=services.settings.snapshot_every, max_age_s=SNAPSHOT_MAX_AGE_S
        ),
        stop,
        every=lambda: SNAPSHOT_CHECK_S,
    )


def _sweep_loop(services: Services, stop: threading.Event) -> None:
    # Deleted originals wait in the blob store's trash for running backups (index.blobs);
    # swept here, off the request path, so a delete costs one rename.
    def sweep() -> None:
        # Temp files first: they need no database (the trash's sweep reads it).
        if removed := services.blobs.sweep_temps():
            log.info("removed %d temp files that writers killed mid-write left", removed)
        if removed := services.blobs.sweep(in_use=services.stores.items.shas_in_use):
            log.info("removed %d deleted originals past their grace period", removed)

    run_resilient("trash sweep", sweep, stop, every=lambda: TRASH_SWEEP_S)


def _follow_loop(services: Services, stop: threading.Event) -> None:
    # Invariant 8: other processes' writes, aligner versions and index epochs reach this
    # process's indexes within the interval, off the request path (index.manager); on
    # Postgres a commit's notification starts the next pass at once (index.wakeup).
    wakeup = Wakeup(services.stores.engine)
    try:
        run_resilient(
            "follow SQL",
            services.indexes.follow_all,
            stop,
            every=lambda: services.settings.follow_interval_s,
            pause=wakeup.pause,
        )
    finally:
        wakeup.close()


def _retune_loop(services: Services, stop: threading.Event) -> None:
    # ``auto`` indexes that outgrew their type get a reindex job (app.services.autoindex);
    # a request never waits for the check or the build.
    retuner = autoindex.Retuner(services)
    run_resilient("auto index", retuner.check, stop, every=lambda: autoindex.RETUNE_EVERY_S)


def _trim_loop(trimmer: Trimmer, stop: threading.Event) -> None:
    # Freed memory the allocator keeps after a burst goes back off the request path
    # (app.memory); the first trim gives back what loading and the precision probe freed.
    trimmer.now()
    run_resilient("memory trim", trimmer.check, stop, every=lambda: TRIM_CHECK_S)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build services off the event loop; on shutdown stop the snapshotter and snapshot."""
    settings: Settings = app.state.settings
    services = await run_in_threadpool(build_services, settings)
    log_start(
        services,
        jobs="run in this process (MMR_WORKER=on)"
        if settings.worker == "on"
        else "left to `mmr worker` processes (MMR_WORKER=off)",
    )
    app.state.services = services
    stop = threading.Event()
    snapshotter = threading.Thread(
        target=_snapshot_loop, args=(services, stop), name="mmr-snapshots", daemon=True
    )
    snapshotter.start()
    sweeper = threading.Thread(
        target=_sweep_loop, args=(services, stop), name="mmr-trash", daemon=True
    )
    sweeper.start()
    follower = threading.Thread(
        target=_follow_loop, args=(services, stop), name="mmr-follow", daemon=True
    )
    follower.start()
    retuner = threading.Thread(
        target=_retune_loop, args=(services, stop), name="mmr-retune", daemon=True
    )
    retuner.start()
    trimmer = threading.Thread(
        target=_trim_loop, args=(Trimmer(), stop), name="mmr-trim", daemon=True
    )
    trimmer.start()
    worker = None
    if settings.worker == "on":
        worker, worker_thread = start_in_process(services)
    try:
        yield
    finally:
        stop.set()
        if worker is not None:
            worker.stop()  # first: a job whose build is stopped goes back to the queue
        services.indexes.stop_builds()  # a follower's hour-long build must not hold this
        snapshotter.join()
        sweeper.join()
        trimmer.join()
        follower.join()
        retuner.join()
        if worker is not None:
            worker_thread.join()
        app.state.services = None
        await run_in_threadpool(services.models.close)
        try:
            await run_in_threadpool(services.indexes.snapshot_all)
        except Exception:  # the database or the disk is gone: the change log still covers it
            log.exception("final index snapshot failed; the next start replays the change log")
        try:
            await run_in_threadpool(services.indexes.leave)
        except Exception:  # its positions expire after index.changes.REPLICA_LEASE_S anyway
            log.warning("could not remove this process's change-log positions", exc_info=True)
        services.engine.dispose()
