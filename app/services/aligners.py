"""A collection's aligner versions: list them, activate one (roll forward or back), and
the heads SQL names active, decoded for the index manager (index/ stores the artefacts and
knows nothing of what they mean)."""

from __future__ import annotations

import contextlib
from typing import Any

from app.schemas.aligners import AlignerList, AlignerPublic
from app.services.errors import SpaceMismatch
from app.services.views import aware
from index.aligners import AlignerStore
from index.builds import BuildStopped
from index.collections import CollectionStore
from index.errors import NotFoundError
from index.manager import IndexManager
from index.spec import IndexSpec
from index.tables import AlignerRow, CollectionRow
from models.encoders.aligner import Aligner


def active_aligner(row: CollectionRow, *, store: AlignerStore) -> Aligner:
    """The collection's active aligner version, read from SQL."""
    if row.aligner_version == 0:
        return legacy_aligner(row)
    found = store.get(collection_id=row.id, version=row.aligner_version)
    if found is None:
        raise LookupError(f"collection {row.name!r} has no aligner v{row.aligner_version}")
    return decoded(found)


def legacy_aligner(row: CollectionRow) -> Aligner:
    """Collections made before aligners were recorded (version 0): identity heads over
    their model and audio model, implicitly."""
    return Aligner.identity(row.dim, recorded_encoders(row), legacy=True)


def recorded_encoders(row: CollectionRow) -> dict[str, str]:
    """Per modality, the encoder whose raw features the collection's items hold."""
    encoders = {"image": row.model, "text": row.model}
    if row.audio_model:
        encoders["audio"] = row.audio_model
    return encoders


def decoded(found: AlignerRow) -> Aligner:
    """A recorded version's heads, numbered as SQL numbers them."""
    return Aligner.from_bytes(found.artefact).numbered(found.version)


def list_aligners(
    *, collections: CollectionStore, aligners: AlignerStore, name: str
) -> AlignerList:
    """Every recorded aligner version of a collection, with how it was made."""
    row = collections.get(name)
    versions = [
        AlignerPublic(
            version=a.version,
            active=a.version == row.aligner_version,
            sha256=a.sha256,
            heads=decoded(a).describe(),
            meta=a.meta,
            created_at=aware(a.created_at),
        )
        for a in aligners.list(row.id)
    ]
    return AlignerList(active=row.aligner_version, aligners=versions)


def record(*, aligners: AlignerStore, row: CollectionRow, aligner: Aligner) -> int:
    """Record a new (inactive) version of a collection's aligner; its number."""
    added = aligners.add(
        collection_id=row.id, artefact=aligner.to_bytes(), meta=aligner.meta, activate=False
    )
    return added.version


def activate(
    *,
    collections: CollectionStore,
    aligners: AlignerStore,
    indexes: IndexManager[Aligner],
    name: str,
    version: int,
    job_id: str | None = None,
    worker: str | None = None,
) -> AlignerList:
    """Make a recorded version the active one: SQL names it, then (in the process that
    holds the index) a new index is built beside the live one and swapped in. ``job_id``:
    only while that job still runs, by ``worker`` when given (JobEndedError otherwise,
    nothing changed)."""
    row = collections.get(name)
    found = aligners.get(collection_id=row.id, version=version)
    if found is None:
        raise NotFoundError(f"collection {name!r} has no aligner version {version}")
    aligner = decoded(found)
    recorded = recorded_encoders(row)
    foreign = {m: e for m, e in aligner.encoders.items() if recorded.get(m) != e}
    if foreign or aligner.dim != row.dim:
        raise SpaceMismatch(
            f"aligner v{version} takes features of {foreign or aligner.encoders} but the "
            f"collection's items come from {recorded}; it cannot be activated"
        )
    fresh = collections.set_space(
        collection_id=row.id, aligner_version=version, job_id=job_id, worker=worker
    )
    _swap_here(indexes, fresh)
    return list_aligners(collections=collections, aligners=aligners, name=name)


def rebuild(
    *,
    collections: CollectionStore,
    indexes: IndexManager[Aligner],
    name: str,
    spec: IndexSpec | None = None,
    stored: tuple[str, dict[str, Any]] | None = None,
) -> CollectionRow:
    """Rebuild the index from SQL (a new epoch, of another type when ``spec`` says so, or
    recorded as ``stored``: an ``auto`` collection's choice), swapped in like an
    activation."""
    row = collections.get(name)
    index = stored if stored is not None else None if spec is None else (spec.type, spec.params())
    fresh = collections.set_space(collection_id=row.id, bump_epoch=True, index=index)
    _swap_here(indexes, fresh)
    return fresh


def _swap_here(indexes: IndexManager[Aligner], row: CollectionRow) -> None:
    """In the process that holds the indexes, swap before returning: the new version
    serves the next search. A worker process holds none; the API process swaps when it
    next touches the collection."""
    if indexes.follow:
        # SQL names the new version or epoch already: a shutdown that stops the build
        # leaves it to the next start (the job is done, not to be run again).
        with contextlib.suppress(BuildStopped):
            indexes.get(row, wait=True)
