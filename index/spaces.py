"""Spaces beside the one a collection serves (a migration to another model, index/ side).

A migrate job builds the new space's rows in ``space_vectors`` from the stored originals
while the collection keeps serving (and taking writes in) its own space; ``switch`` then
moves the collection over in one transaction under the collection's write lock: the items'
vectors and the aligner history of the old space are kept aside (a rollback is a migration
back that re-encodes only what changed since), those of the new one take their place, the
collection row names the new model and dimension, and a new index epoch makes every
process rebuild its index from SQL (invariant 8). An item written during the build lacks a
row of the new space, or has one made from other bytes: ``missing`` finds it by the
original's digest, so the job encodes it before the switch and nothing is encoded twice.
What the vectors mean is the model side's business: here they are bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from index.collections import CollectionCache
from index.db import no_time_limit
from index.errors import ConflictError, JobEndedError, NotFoundError
from index.items import IN_CHUNK, lock_collection
from index.tables import (
    AlignerRow,
    CollectionRow,
    ItemRow,
    JobRow,
    SpaceAlignerRow,
    SpaceRow,
    SpaceVectorRow,
    utcnow,
)
from index.wakeup import announce

ALIGNER_COLUMNS = (
    "collection_id",
    "key",
    "version",
    "active",
    "sha256",
    "artefact",
    "meta",
    "created_at",
)
BUILDING = "building"
KEPT = "kept"


def space_key(model: str, audio_model: str | None) -> str:
    """The key of the space a model (and audio tower) makes."""
    return f"{model}\n{audio_model or ''}"


@dataclass(frozen=True)
class ToEncode:
    """A stored item whose vectors the space lacks (or holds for other bytes)."""

    pk: int
    modality: str
    sha256: str
    content_type: str
    text: str | None


@dataclass(frozen=True)
class SpaceVectors:
    """An item's features and vectors in a space, made from the original ``sha256``."""

    pk: int
    sha256: str
    feature: bytes
    vector: bytes
    spans: list[list[float]] | None
    aligner_version: int


@dataclass(frozen=True)
class Switched:
    """The outcome of a switch: the collection as it now is and the space it left."""

    row: CollectionRow
    left: SpaceRow


def _missing_join(collection_id: int, key: str) -> Any:
    """Items of the collection with their row of the space, if made from the same bytes."""
    return (
        select(ItemRow.pk, ItemRow.modality, ItemRow.sha256, ItemRow.content_type, ItemRow.text)
        .outerjoin(
            SpaceVectorRow,
            and_(
                SpaceVectorRow.item_pk == ItemRow.pk,
                SpaceVectorRow.key == key,
                SpaceVectorRow.sha256 == ItemRow.sha256,
            ),
        )
        .where(ItemRow.collection_id == collection_id, SpaceVectorRow.item_pk.is_(None))
    )


class SpaceStore:
    """Spaces of collections beside the live one, over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session], cache: CollectionCache) -> None:
        self.sessions = sessions
        self.cache = cache

    def begin(
        self,
        *,
        collection_id: int,
        model: str,
        audio_model: str | None,
        dim: int,
        job_id: str,
        aligner: tuple[bytes, str, dict[str, Any]],
    ) -> tuple[SpaceRow, SpaceAlignerRow]:
        """The space a job builds, and the aligner version its vectors are made with: one
        kept from an earlier switch (a migration back), one an earlier attempt of the job
        began (a job taken back from a dead worker goes on), or else a new space whose
        history starts at version 1 with ``aligner`` (artefact, sha256, meta)."""
        key = space_key(model, audio_model)
        with self.sessions.begin() as session:
            row = session.get(CollectionRow, collection_id)
            if row is None:
                raise NotFoundError("the collection was deleted")
            if space_key(row.model, row.audio_model) == key:
                raise ConflictError(
                    f"collection {row.name!r} already uses {model}: there is nothing to migrate"
                )
            space = session.get(SpaceRow, (collection_id, key))
            if space is None:
                space = SpaceRow(
                    collection_id=collection_id,
                    key=key,
                    model=model,
                    audio_model=audio_model,
                    dim=dim,
                    state=BUILDING,
                    job_id=job_id,
                    created_at=utcnow(),
                )
                session.add(space)
            else:
                space.job_id = job_id
            session.flush()
            active = session.scalar(
                select(SpaceAlignerRow)
                .where(SpaceAlignerRow.collection_id == collection_id, SpaceAlignerRow.key == key)
                .order_by(SpaceAlignerRow.active.desc(), SpaceAlignerRow.version.desc())
                .limit(1)
            )
            if active is None:
                # A new space, or one kept from a collection of the implicit identity heads
                # (aligner version 0: the given identity heads are the same, recorded as 1).
                artefact, sha, meta = aligner
                active = SpaceAlignerRow(
                    collection_id=collection_id,
                    key=key,
                    version=1,
                    active=True,
                    sha256=sha,
                    artefact=artefact,
                    meta=meta,
                    created_at=utcnow(),
                )
                session.add(active)
                session.flush()
            session.expunge_all()
        return space, active

    def get(self, collection_id: int, key: str) -> SpaceRow | None:
        """One space of a collection, or None."""
        with self.sessions() as session:
            return session.get(SpaceRow, (collection_id, key))

    def of(self, collection_id: int) -> list[SpaceRow]:
        """A collection's spaces beside its own, newest first."""
        with self.sessions() as session:
            stmt = (
                select(SpaceRow)
                .where(SpaceRow.collection_id == collection_id)
                .order_by(SpaceRow.created_at.desc())
            )
            return list(session.scalars(stmt))

    def missing(
        self, *, collection_id: int, key: str, after_pk: int = 0, limit: int = 256
    ) -> list[ToEncode]:
        """Up to ``limit`` items (by key, after ``after_pk``) the space has no vectors of,
        or has vectors of other bytes."""
        stmt = (
            _missing_join(collection_id, key)
            .where(ItemRow.pk > after_pk)
            .order_by(ItemRow.pk)
            .limit(limit)
        )
        with self.sessions() as session:
            return [ToEncode(int(r[0]), r[1], r[2], r[3], r[4]) for r in session.execute(stmt)]

    def count_missing(self, *, collection_id: int, key: str) -> int:
        """How many items the space still lacks."""
        inner = _missing_join(collection_id, key).subquery()
        with self.sessions() as session, no_time_limit(session.connection()):
            return int(session.scalar(select(func.count()).select_from(inner)) or 0)

    def holds(self, *, collection_id: int, pk: int, sha256: str) -> bool:
        """Whether the item still holds the original ``sha256``."""
        stmt = select(ItemRow.sha256).where(
            ItemRow.collection_id == collection_id, ItemRow.pk == pk
        )
        with self.sessions() as session:
            return session.scalar(stmt) == sha256

    def modalities(self, collection_id: int) -> set[str]:
        """The modalities of the collection's items (what the new model must encode)."""
        stmt = select(ItemRow.modality).where(ItemRow.collection_id == collection_id).distinct()
        with self.sessions() as session:
            return set(session.scalars(stmt))

    def count(self, *, collection_id: int, key: str) -> int:
        """How many items the space holds vectors of."""
        stmt = select(func.count()).where(
            SpaceVectorRow.collection_id == collection_id, SpaceVectorRow.key == key
        )
        with self.sessions() as session:
            return int(session.scalar(stmt) or 0)

    def put(self, *, collection_id: int, key: str, rows: Sequence[SpaceVectors]) -> int:
        """Store items' vectors in the space (in place of what it held for them), those whose
        item still holds the same original; how many were stored. One transaction under the
        collection's write lock: an item deleted or replaced meanwhile is skipped (the next
        pass of ``missing`` finds the replaced one)."""
        if not rows:
            return 0
        with self.sessions.begin() as session:
            lock_collection(session, collection_id)
            if session.get(SpaceRow, (collection_id, key)) is None:
                raise NotFoundError("the space was dropped (the job was cancelled)")
            pks = [r.pk for r in rows]
            current: dict[int, str] = {}
            for start in range(0, len(pks), IN_CHUNK):
                chunk = pks[start : start + IN_CHUNK]
                stmt = select(ItemRow.pk, ItemRow.sha256).where(
                    ItemRow.collection_id == collection_id, ItemRow.pk.in_(chunk)
                )
                current.update((int(pk), sha) for pk, sha in session.execute(stmt))
            kept = [r for r in rows if current.get(r.pk) == r.sha256]
            for start in range(0, len(kept), IN_CHUNK):
                chunk = [r.pk for r in kept[start : start + IN_CHUNK]]
                session.execute(
                    delete(SpaceVectorRow).where(
                        SpaceVectorRow.key == key, SpaceVectorRow.item_pk.in_(chunk)
                    )
                )
            if kept:
                session.execute(
                    insert(SpaceVectorRow),
                    [
                        {
                            "item_pk": r.pk,
                            "key": key,
                            "collection_id": collection_id,
                            "sha256": r.sha256,
                            "feature": r.feature,
                            "vector": r.vector,
                            "spans": r.spans,
                            "aligner_version": r.aligner_version,
                        }
                        for r in kept
                    ],
                )
        return len(kept)

    def drop(self, *, collection_id: int, key: str) -> bool:
        """Remove a space with its vectors and aligner versions; False when there was none."""
        with self.sessions.begin() as session, no_time_limit(session.connection()):
            found = session.get(SpaceRow, (collection_id, key)) is not None
            _remove(session, collection_id, key)
        return found

    def switch(
        self,
        *,
        collection_id: int,
        key: str,
        job_id: str,
        index: tuple[str, dict[str, Any]] | None = None,
    ) -> Switched | int:
        """Move the collection to the space in one transaction, under its write lock; the
        number of items the space still lacks (nothing changed) when it is not complete."""
        with self.sessions.begin() as session, no_time_limit(session.connection()):
            lock_collection(session, collection_id)
            row = session.get(CollectionRow, collection_id)
            space = session.get(SpaceRow, (collection_id, key))
            if row is None or space is None:
                raise NotFoundError("the collection or the space was dropped")
            # Locked until the commit: a cancel waits for the switch, or the switch sees it.
            status = session.scalar(
                select(JobRow.status).where(JobRow.id == job_id).with_for_update()
            )
            if status != "running":  # cancelled meanwhile: the collection stays as it is
                raise JobEndedError(f"job {job_id} is {status or 'gone'}: no switch")
            inner = _missing_join(collection_id, key).subquery()
            lacking = int(session.scalar(select(func.count()).select_from(inner)) or 0)
            if lacking:
                return lacking
            left = _keep_current(session, row, job_id)
            row.aligner_version = _bring_in(session, row, key)
            row.model, row.audio_model, row.dim = space.model, space.audio_model, space.dim
            if index is not None:
                row.index_type, row.index_params = index
            row.index_epoch += 1
            _remove(session, collection_id, key)
            announce(session)  # every process rebuilds its index in the new space
            session.flush()
            session.expunge_all()
        self.cache.forget()
        return Switched(row, left)


def _keep_current(session: Session, row: CollectionRow, job_id: str) -> SpaceRow:
    """Set the collection's current space aside as a kept one: its items' vectors and its
    aligner history (which then restarts for the new space)."""
    key = space_key(row.model, row.audio_model)
    _remove(session, row.id, key)  # what an older migration kept of it is out of date
    left = SpaceRow(
        collection_id=row.id,
        key=key,
        model=row.model,
        audio_model=row.audio_model,
        dim=row.dim,
        state=KEPT,
        job_id=job_id,
        index_type=row.index_type,
        index_params=row.index_params,
        created_at=utcnow(),
    )
    session.add(left)
    columns = ["item_pk", "key", "collection_id", "sha256", "feature", "vector", "spans"]
    session.execute(
        insert(SpaceVectorRow).from_select(
            [*columns, "aligner_version"],
            select(
                ItemRow.pk,
                literal(key),
                ItemRow.collection_id,
                ItemRow.sha256,
                ItemRow.feature,
                ItemRow.vector,
                ItemRow.spans,
                ItemRow.aligner_version,
            ).where(ItemRow.collection_id == row.id),
        )
    )
    session.execute(
        insert(SpaceAlignerRow).from_select(
            list(ALIGNER_COLUMNS),
            select(
                AlignerRow.collection_id,
                literal(key),
                AlignerRow.version,
                AlignerRow.version == row.aligner_version,
                AlignerRow.sha256,
                AlignerRow.artefact,
                AlignerRow.meta,
                AlignerRow.created_at,
            ).where(AlignerRow.collection_id == row.id),
        )
    )
    session.execute(delete(AlignerRow).where(AlignerRow.collection_id == row.id))
    session.flush()
    return left


def _bring_in(session: Session, row: CollectionRow, key: str) -> int:
    """The space's vectors into the items and its aligner history into ``aligners``; the
    version to make active."""

    def moved(column: Any) -> Any:
        return (
            select(column)
            .where(SpaceVectorRow.item_pk == ItemRow.pk, SpaceVectorRow.key == key)
            .scalar_subquery()
        )

    session.execute(
        update(ItemRow)
        .where(ItemRow.collection_id == row.id)
        .values(
            feature=moved(SpaceVectorRow.feature),
            vector=moved(SpaceVectorRow.vector),
            spans=moved(SpaceVectorRow.spans),
            aligner_version=moved(SpaceVectorRow.aligner_version),
        )
        .execution_options(synchronize_session=False)
    )
    versions = list(
        session.scalars(
            select(SpaceAlignerRow).where(
                SpaceAlignerRow.collection_id == row.id, SpaceAlignerRow.key == key
            )
        )
    )
    if not versions:
        raise LookupError("the space has no aligner version")
    for v in versions:
        session.add(
            AlignerRow(
                collection_id=row.id,
                version=v.version,
                sha256=v.sha256,
                artefact=v.artefact,
                meta=v.meta,
                created_at=v.created_at,
            )
        )
    active = [v.version for v in versions if v.active] or [max(v.version for v in versions)]
    return active[0]


def _remove(session: Session, collection_id: int, key: str) -> None:
    session.execute(
        delete(SpaceVectorRow).where(
            SpaceVectorRow.collection_id == collection_id, SpaceVectorRow.key == key
        )
    )
    session.execute(
        delete(SpaceAlignerRow).where(
            SpaceAlignerRow.collection_id == collection_id, SpaceAlignerRow.key == key
        )
    )
    session.execute(
        delete(SpaceRow).where(SpaceRow.collection_id == collection_id, SpaceRow.key == key)
    )
