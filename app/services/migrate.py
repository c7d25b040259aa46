"""Migrate jobs: move a collection to another model by re-encoding its stored originals.

The new space is built beside the live one (index/spaces.py): searches and writes go on in
the old space; each pass encodes the items the new space lacks (new ones, and ones replaced
since they were encoded), so an item written during the migration lands in both; a job
taken back from a dead worker goes on where it stopped. The switch is one transaction;
then every process rebuilds its index in the new space. The old space is kept until an
operator confirms the switch (``confirm``) or moves back (``rollback``: a migration to the
kept space, which re-encodes only what changed since).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.schemas.collections import IndexSettings
from app.schemas.jobs import MigrateJobCreate, MigrationConfirmed
from app.services.collections import stored_index
from app.services.embedding import Embedder, Encoded, all_vectors, as_stored, kept_vectors
from app.services.errors import SpaceMismatch
from app.services.items import feature_space
from app.services.jobs import JobContext, require_no_migration
from app.services.media import decode_upload
from app.settings import Settings
from app.state import Services
from index.blobs import BlobStore
from index.collections import CollectionStore
from index.errors import ConflictError, JobEndedError
from index.items import vector_blob
from index.jobs import JobStore
from index.spaces import KEPT, SpaceStore, SpaceVectors, Switched, ToEncode, space_key
from index.spec import IndexSpec
from index.tables import CollectionRow, SpaceRow
from models.encoders.aligner import Aligner
from models.encoders.registry import NO_AUDIO, parse_audio_id
from models.errors import MediaError
from models.training.finetune import Cancelled

log = logging.getLogger("mmr.migrate")

BATCH = 64  # items encoded together (one forward pass per modality) and stored together
RAY_CHUNK = 4096  # items per Ray pass (each pass starts a Ray Data pipeline: seconds)
MAX_PASSES = 8  # passes over what is missing before the switch gives up on a busy collection


def run_migrate(services: Services, ctx: JobContext) -> dict[str, Any]:
    """Build the new space, switch the collection to it, report what it took."""
    params = ctx.job.params
    stores = services.stores
    row = stores.collections.get_by_id(ctx.job.collection_id)
    with _target(services, params) as embedder:
        if _switched_before(stores.spaces, row, embedder, ctx.job.id):
            # An earlier attempt switched, then its worker died before recording it.
            return {"model": row.model, "dim": row.dim, "switched_by_an_earlier_attempt": True}
        _check_modalities(stores.spaces.modalities(row.id), embedder, row)
        fresh = embedder.default_aligner
        artefact = fresh.to_bytes()
        space, active = stores.spaces.begin(
            collection_id=row.id,
            model=embedder.model_id,
            audio_model=embedder.audio_model_id,
            dim=embedder.dim,
            job_id=ctx.job.id,
            aligner=(artefact, hashlib.sha256(artefact).hexdigest(), fresh.meta),
        )
        heads = Aligner.from_bytes(active.artefact).numbered(active.version)
        try:
            vectors = stores.items.vector_count(row.id, row.dim)
            spec = _spec(row, space, params.get("index"), embedder.dim, vectors)
            return _build_and_switch(services, ctx, row, embedder, heads, spec)
        except TooBusy:
            raise  # what was built stays: the job run again goes on from there
        except Cancelled:
            if _cancelled(stores.jobs, ctx) and space.state != KEPT:
                stores.spaces.drop(collection_id=row.id, key=space.key)
            raise
        except Exception:
            if space.state != KEPT:  # failed: the collection stays as it was, nothing beside
                stores.spaces.drop(collection_id=row.id, key=space.key)
            raise


class TooBusy(ConflictError):
    """The collection changed faster than the passes could follow."""


def _switched_before(
    spaces: SpaceStore, row: CollectionRow, embedder: Embedder, job_id: str
) -> bool:
    """Whether this job already moved the collection to the embedder's space."""
    here = space_key(row.model, row.audio_model)
    if here != space_key(embedder.model_id, embedder.audio_model_id):
        return False
    return any(s.job_id == job_id and s.state == KEPT for s in spaces.of(row.id))


def _target(services: Services, params: dict[str, Any]) -> Any:
    """The model the job names, held from the pool for the job."""
    audio = params.get("audio_model")
    if audio is None:
        return services.models.use_own(params["model"])
    kind, _ = parse_audio_id(audio)
    recorded = None if kind == NO_AUDIO else (params["model"] if audio == "" else audio)
    return services.models.use(params["model"], recorded)


def _spec(
    row: CollectionRow, space: SpaceRow, wanted: dict[str, Any] | None, dim: int, vectors: int
) -> tuple[str, dict[str, Any]]:
    """The index settings of the new space: the job's, else those a kept space had (a
    rollback), else the collection's, checked against the new dimension. ``auto`` stays
    ``auto`` (chosen for ``vectors`` when the job asks for it)."""
    if wanted is not None:
        return stored_index(IndexSettings(**wanted), dim=dim, vectors=vectors)
    if space.index_type is not None:
        stored = (space.index_type, space.index_params or {})
    else:
        stored = (row.index_type, row.index_params)
    spec = IndexSpec.of(*stored)
    try:
        spec.check(dim)
    except ValueError as exc:
        raise ValueError(
            f"the collection's index settings do not fit the new model's {dim} dimensions "
            f"({exc}): give the job index settings that do (its 'index' field)"
        ) from exc
    return stored


def _check_modalities(held: set[str], embedder: Embedder, row: CollectionRow) -> None:
    # A video needs only the image tower: without an audio tower its frames alone are kept.
    lacking = sorted(held - set(embedder.modalities) - {"video"})
    if lacking:
        raise SpaceMismatch(
            f"collection {row.name!r} holds {', '.join(lacking)} items but {embedder.model_id} "
            f"encodes only {', '.join(embedder.modalities)}: give the job an audio_model "
            "(as MMR_AUDIO_MODEL takes it) or migrate to a model that has one"
        )


def _build_and_switch(
    services: Services,
    ctx: JobContext,
    row: CollectionRow,
    embedder: Embedder,
    heads: Aligner,
    spec: tuple[str, dict[str, Any]],
) -> dict[str, Any]:
    stores = services.stores
    key = space_key(embedder.model_id, embedder.audio_model_id)
    total = stores.items.count(row.id)
    reused = total - stores.spaces.count_missing(collection_id=row.id, key=key)
    started = time.monotonic()
    encoded = on_ray = 0
    for passes in range(1, MAX_PASSES + 1):
        stored, there = _pass(services, ctx, row, embedder, heads, key, started, (encoded, reused))
        encoded, on_ray = encoded + stored, on_ray + there
        _stop_if_cancelled(stores.jobs, ctx)
        try:
            outcome = stores.spaces.switch(
                collection_id=row.id, key=key, job_id=ctx.job.id, index=spec
            )
        except JobEndedError as exc:
            raise Cancelled from exc
        if isinstance(outcome, Switched):
            seconds = time.monotonic() - started
            log.info("collection %s now in the space of %s", row.name, embedder.model_id)
            total = stores.items.count(row.id)
            metrics = _metrics(outcome, row, total, encoded, reused, passes, seconds)
            return {**metrics, "encoded_on_ray": on_ray}
        log.info("%d items of %s changed during pass %d: another pass", outcome, row.name, passes)
    raise TooBusy(
        f"collection {row.name!r} changed faster than the migration could follow in "
        f"{MAX_PASSES} passes: run the job again when writes slow down (it goes on from "
        "what was built)"
    )


def _pass(
    services: Services,
    ctx: JobContext,
    row: CollectionRow,
    embedder: Embedder,
    heads: Aligner,
    key: str,
    started: float,
    counts: tuple[int, int],
) -> tuple[int, int]:
    """Encode every item the space lacks, in key order; how many were stored, and how many
    of those were encoded on the Ray cluster (configured: the images of each chunk)."""
    stores = services.stores
    ray = services.settings.ray_address
    done, reused = counts
    after = 0
    stored = on_ray = 0
    total = stores.items.count(row.id)  # once a pass: the progress's denominator
    while True:
        _stop_if_cancelled(stores.jobs, ctx)  # one query a batch: a cancel stops it at once
        chunk = RAY_CHUNK if ray else BATCH
        todo = stores.spaces.missing(collection_id=row.id, key=key, after_pk=after, limit=chunk)
        if not todo:
            return stored, on_ray
        after = todo[-1].pk
        given = _on_ray(services, embedder, todo) if ray else {}
        on_ray += len(given)
        for start in range(0, len(todo), BATCH):
            _stop_if_cancelled(stores.jobs, ctx)
            part = todo[start : start + BATCH]
            rows = encode_items(
                services.settings,
                services.blobs,
                embedder,
                heads,
                part,
                given,
                holds=lambda t: stores.spaces.holds(collection_id=row.id, pk=t.pk, sha256=t.sha256),
            )
            stored += stores.spaces.put(collection_id=row.id, key=key, rows=rows)
            _report(ctx, total, reused + done + stored, done + stored, started)


def _on_ray(services: Services, embedder: Embedder, todo: Sequence[ToEncode]) -> dict[int, Any]:
    """The raw features of the images among ``todo``, by item key, decoded and encoded on the
    Ray cluster (``MMR_RAY_ADDRESS``) from their originals' paths; the cluster must compute
    the space this worker does (the same model, width and preprocessing)."""
    from app.ingest import ray_engine

    images: dict[Path, list[int]] = {}
    for t in todo:
        if t.modality == "image":  # items that share their bytes share one encoding
            images.setdefault(services.blobs.path(t.sha256), []).append(t.pk)
    if not images:
        return {}
    address = services.settings.ray_address
    features, space = ray_engine.encode(
        list(images),
        model=embedder.model_id,
        address=None if address == "local" else address,
        batch=BATCH,
        cache_dir=services.settings.data_dir,
    )
    if space is not None and space != feature_space(embedder):
        raise SpaceMismatch(
            f"the Ray cluster computed features in the space {space}, this worker "
            f"{feature_space(embedder)}: run the cluster with the same release and model"
        )
    return {
        pk: np.asarray(f, dtype=np.float32) for path, f in features.items() for pk in images[path]
    }


def encode_items(
    settings: Settings,
    blobs: BlobStore,
    embedder: Embedder,
    heads: Aligner,
    todo: Sequence[ToEncode],
    given: dict[int, Any] | None = None,
    *,
    holds: Callable[[ToEncode], bool] = lambda _: True,
) -> list[SpaceVectors]:
    """Stored items encoded again from their originals (one forward pass per modality; the
    raw features in ``given`` by item key were computed elsewhere) and placed by ``heads``.
    An item deleted or replaced since it was listed (``holds`` says it no longer holds that
    original) is left out: its next state is found by the next pass. An original that
    cannot be read or decoded fails the job (the collection stays as it was) with the
    item's id."""
    given = given or {}
    local: list[ToEncode] = []
    payloads: list[Any] = []
    gone: set[int] = set()
    for item in todo:
        if item.pk in given:
            continue
        if item.modality == "text":
            local.append(item)
            payloads.append(item.text or "")
            continue
        try:
            data = blobs.get(item.sha256)
            payload = decode_upload(data, settings=settings, embedder=embedder).payload
        except (OSError, MediaError) as exc:
            if not holds(item):  # deleted or replaced meanwhile: its bytes went with it
                gone.add(item.pk)
                continue
            raise ValueError(
                f"the original of item #{item.pk} ({item.content_type}) cannot be encoded "
                f"again: {exc}; delete or replace the item, then run the job again"
            ) from exc
        local.append(item)
        payloads.append(payload)
    todo = [t for t in todo if t.pk not in gone]
    here = iter(embedder.encode_mixed([t.modality for t in local], payloads))
    encoded, features = as_stored(
        [
            Encoded("image", given[t.pk].reshape(1, -1)) if t.pk in given else next(here)
            for t in todo
        ]
    )
    return [
        SpaceVectors(
            pk=item.pk,
            sha256=item.sha256,
            feature=feature.blob,
            vector=vector_blob(kept_vectors(heads, enc, vectors)),
            spans=enc.span_list(),
            aligner_version=heads.version,
        )
        for item, enc, feature, vectors in zip(
            todo, encoded, features, all_vectors(heads, encoded), strict=True
        )
    ]


def _report(ctx: JobContext, total: int, ready: int, encoded: int, started: float) -> None:
    seconds = time.monotonic() - started
    rate = encoded / seconds if seconds > 0 else 0.0
    left = max(total - ready, 0)
    ctx.report(
        fraction=round(min(ready / total, 1.0) if total else 1.0, 4),
        items=total,
        encoded=encoded,
        items_per_s=round(rate, 1),
        eta_s=round(left / rate, 1) if rate > 0 else None,
    )


def _metrics(
    switched: Switched,
    before: CollectionRow,
    total: int,
    encoded: int,
    reused: int,
    passes: int,
    seconds: float,
) -> dict[str, Any]:
    row = switched.row
    effective = IndexSpec.of(row.index_type, row.index_params)
    return {
        "model": row.model,
        "audio_model": row.audio_model,
        "dim": row.dim,
        "previous_model": before.model,
        "previous_audio_model": before.audio_model,
        "previous_dim": before.dim,
        "items": total,
        "encoded": encoded,
        "reused": reused,
        "passes": passes,
        "seconds": round(seconds, 3),
        "items_per_s": round(encoded / seconds, 1) if seconds > 0 else None,
        "aligner_version": row.aligner_version,
        "index_epoch": row.index_epoch,
        "index_type": row.index_type,
        "index": {"type": effective.type, **effective.params()},
    }


def _cancelled(jobs: JobStore, ctx: JobContext) -> bool:
    """Whether a client cancelled the job (not the worker stopping: that job goes back
    to the queue and goes on where it stopped)."""
    try:
        return jobs.get(ctx.job.id).status == "cancelled"
    except Exception:  # the database is gone: keep what was built, the job can go on
        return False


def _stop_if_cancelled(jobs: JobStore, ctx: JobContext) -> None:
    worker = ctx.job.worker or ""
    if ctx.should_stop() or not jobs.still_running(ctx.job.id, worker=worker):
        raise Cancelled


def confirm(
    *, collections: CollectionStore, spaces: SpaceStore, jobs: JobStore, name: str
) -> MigrationConfirmed:
    """Drop the spaces a migration left (and one a failed migration left half built): the
    switch is final, their storage is freed (409 while a migration is queued or running)."""
    row = collections.get(name)
    # A queued rollback needs the kept space, a running migration the one it builds.
    require_no_migration(jobs, row.id, row.name)
    dropped = []
    for space in spaces.of(row.id):
        spaces.drop(collection_id=row.id, key=space.key)
        dropped.append(space.model)
    return MigrationConfirmed(collection=row.name, model=row.model, dropped=dropped)


def rollback_job(
    *, collections: CollectionStore, spaces: SpaceStore, name: str
) -> MigrateJobCreate:
    """The migrate job back to the space the last migration left (409 when none is kept)."""
    row = collections.get(name)
    kept = [s for s in spaces.of(row.id) if s.state == KEPT]
    if not kept:
        raise ConflictError(
            f"collection {name!r} keeps no earlier space: nothing to roll back to (confirmed, "
            "or never migrated)"
        )
    space = kept[0]
    # "" names the model's own tower; None would be MMR_AUDIO_MODEL's for MMR_MODEL.
    audio = "" if space.audio_model == space.model else (space.audio_model or NO_AUDIO)
    return MigrateJobCreate(
        type="migrate", collection=row.name, model=space.model, audio_model=audio
    )
