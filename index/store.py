"""The SQL metadata store: every write is one transaction that also appends to the change log."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from index.db import no_time_limit
from index.errors import ConflictError, NotFoundError
from index.tables import AlignerRow, ChangeRow, CollectionRow, ItemRow, ItemTagRow, utcnow

Scalar = str | int | float | bool | None
MAX_VERSION = 2**31 - 1  # aligner versions are 32-bit integers in SQL


@dataclass
class ItemDraft:
    """What an ingest has computed, ready to be written."""

    external_id: str
    modality: str
    sha256: str
    content_type: str
    size_bytes: int
    feature: np.ndarray
    vector: np.ndarray
    aligner_version: int
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    spans: list[list[float]] | None = None  # per-segment [start, end] seconds of a recording


@dataclass(frozen=True)
class StoredVectors:
    """What rebuilding an index needs of an item: its raw features and stored vectors."""

    pk: int
    modality: str
    aligner_version: int
    feature: bytes
    vector: bytes


def stored_of(item: ItemRow) -> StoredVectors:
    """The stored features and vectors of an item row."""
    return StoredVectors(item.pk, item.modality, item.aligner_version, item.feature, item.vector)


@dataclass
class Upserted:
    """The outcome of an upsert: the row, whether it is new, the digest it replaced."""

    row: ItemRow
    created: bool
    replaced_sha: str | None


def canonical(value: Scalar) -> str:
    """One JSON spelling per value, so that 1, 1.0 and "1" compare as JSON does."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # ASCII escapes keep control characters (NUL above all) out of the text column.
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def tag_pairs(metadata: dict[str, Any]) -> set[tuple[str, str]]:
    """The (key, value) pairs an equality filter can match: scalars and scalar list elements."""
    pairs: set[tuple[str, str]] = set()
    for key, value in metadata.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, str | int | float | bool):
                text = canonical(v)
                if len(text) <= 1024 and len(key) <= 255 and storable(key):
                    pairs.add((key, text))
    return pairs


def storable(text: str) -> bool:
    """Whether a string fits a text column on every backend (Postgres refuses NUL)."""
    return "\x00" not in text


def _find_item(session: Session, collection_id: int, external_id: str) -> ItemRow:
    """The item under this id as given or, failing that, in NFC: ids are written in NFC
    (app/ids.py), so any spelling of one finds it, and an id stored before that rule keeps
    being found under its own spelling."""
    row = None
    for spelling in dict.fromkeys([external_id, unicodedata.normalize("NFC", external_id)]):
        if row is None and storable(spelling):
            row = session.scalar(
                select(ItemRow).where(
                    ItemRow.collection_id == collection_id, ItemRow.external_id == spelling
                )
            )
    if row is None:
        raise NotFoundError(f"no item {external_id!r} in this collection")
    return row


def to_blob(vectors: np.ndarray) -> bytes:
    """A float32 vector, or rows of them, as bytes for a LargeBinary column."""
    return np.ascontiguousarray(vectors, dtype=np.float32).tobytes()


def from_blob(blob: bytes, width: int | None = None) -> np.ndarray:
    """The inverse of to_blob: flat, or rows of ``width`` when given."""
    flat = np.frombuffer(blob, dtype=np.float32)
    return flat if width is None else flat.reshape(-1, width)


def _aligner_row(
    collection_id: int, version: int, artefact: bytes, meta: dict[str, Any]
) -> AlignerRow:
    return AlignerRow(
        collection_id=collection_id,
        version=version,
        sha256=hashlib.sha256(artefact).hexdigest(),
        artefact=artefact,
        meta=meta,
        created_at=utcnow(),
    )


class ItemSummary(NamedTuple):
    """An item without its feature and vector blobs: what a search hit shows."""

    pk: int
    external_id: str
    modality: str
    meta: dict[str, Any]
    sha256: str
    content_type: str
    size_bytes: int
    text: str | None
    spans: list[list[float]] | None
    created_at: datetime
    updated_at: datetime


# The columns of ItemSummary, in its order ("metadata" is the column behind ``meta``).
_SUMMARY_COLUMNS = ["metadata" if name == "meta" else name for name in ItemSummary._fields]


@functools.lru_cache(maxsize=256)
def _summary_sql(paramstyle: str, count: int) -> str:
    """SELECT of ``count`` items' summaries, in the driver's own parameter style (the two
    drivers the project runs on: sqlite3's ``?``, psycopg's ``%s``)."""
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(paramstyle)
    if mark is None:
        raise ValueError(f"no item hydration for the parameter style {paramstyle!r}")
    columns = ", ".join(_SUMMARY_COLUMNS)
    marks = ", ".join([mark] * count)
    table = ItemRow.__tablename__
    return f"SELECT {columns} FROM {table} WHERE collection_id = {mark} AND pk IN ({marks})"


def _summary(values: Sequence[Any]) -> ItemSummary:
    """A driver's row -> ItemSummary: JSON and timestamps come back as text from SQLite,
    parsed from psycopg (SQLAlchemy's type processing is what this path skips)."""
    pk, ext, modality, meta, sha, ctype, size, text, spans, created, updated = values
    return ItemSummary(
        pk,
        ext,
        modality,
        json.loads(meta) if isinstance(meta, str | bytes) else meta,
        sha,
        ctype,
        size,
        text,
        json.loads(spans) if isinstance(spans, str | bytes) else spans,
        created if isinstance(created, datetime) else datetime.fromisoformat(created),
        updated if isinstance(updated, datetime) else datetime.fromisoformat(updated),
    )


class MetadataStore:
    """Collections, items, tags and the change log, over any SQLAlchemy engine.

    Collection rows are read on every request and change rarely, so lookups by name are
    kept for ``collection_ttl_s``: this store's own changes drop them at once; another
    process's (a worker activating a new aligner version) show within the TTL.
    """

    def __init__(self, sessions: sessionmaker[Session], *, collection_ttl_s: float = 0.5) -> None:
        self.sessions = sessions
        bind = sessions.kw["bind"]
        assert isinstance(bind, Engine), "the store's sessions are bound to one engine"
        self.engine: Engine = bind
        self.collection_ttl_s = collection_ttl_s
        self._by_name: dict[str, tuple[float, CollectionRow]] = {}

    def _forget_collections(self) -> None:
        self._by_name = {}

    # -- collections -------------------------------------------------------------------
    def create_collection(
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
        self._forget_collections()
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.flush()
                session.add(_aligner_row(row.id, 1, aligner, aligner_meta))
        except IntegrityError as exc:
            raise ConflictError(f"a collection named {name!r} already exists") from exc
        return row

    # -- aligners ------------------------------------------------------------------------
    def add_aligner(
        self, *, collection_id: int, artefact: bytes, meta: dict[str, Any], activate: bool
    ) -> AlignerRow:
        """Record a new version (the next number) of a collection's aligner."""
        with self.sessions.begin() as session:
            newest = session.scalar(
                select(func.max(AlignerRow.version)).where(
                    AlignerRow.collection_id == collection_id
                )
            )
            row = _aligner_row(collection_id, int(newest or 0) + 1, artefact, meta)
            session.add(row)
            if activate:
                collection = session.get(CollectionRow, collection_id)
                if collection is None:
                    raise NotFoundError("the collection was deleted")
                collection.aligner_version = row.version
        self._forget_collections()
        return row

    def get_aligner(self, *, collection_id: int, version: int) -> AlignerRow | None:
        """One recorded version, or None (version 0 is never recorded: the identity)."""
        if not 0 < version <= MAX_VERSION:  # no row holds it; the database would refuse it
            return None
        with self.sessions() as session:
            return session.scalar(
                select(AlignerRow).where(
                    AlignerRow.collection_id == collection_id, AlignerRow.version == version
                )
            )

    def list_aligners(self, collection_id: int) -> list[AlignerRow]:
        """Every recorded version of a collection, oldest first."""
        with self.sessions() as session:
            stmt = (
                select(AlignerRow)
                .where(AlignerRow.collection_id == collection_id)
                .order_by(AlignerRow.version)
            )
            return list(session.scalars(stmt))

    def get_collection(self, name: str) -> CollectionRow:
        """The collection by name; NotFoundError when there is none."""
        now = time.monotonic()
        kept = self._by_name.get(name)
        if kept is not None and now - kept[0] < self.collection_ttl_s:
            return kept[1]
        row = None
        if storable(name):
            with self.sessions() as session:
                row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
        if row is None:
            raise NotFoundError(f"no collection named {name!r}")
        self._by_name[name] = (now, row)
        return row

    def list_collections(self) -> list[CollectionRow]:
        """All collections, oldest first."""
        with self.sessions() as session:
            return list(session.scalars(select(CollectionRow).order_by(CollectionRow.id)))

    def get_collection_by_id(self, collection_id: int) -> CollectionRow:
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
    ) -> CollectionRow:
        """Name another active aligner version and/or a new index epoch, with new index
        settings (type, params) if given (a swap follows)."""
        with self.sessions.begin() as session:
            row = session.get(CollectionRow, collection_id)
            if row is None:
                raise NotFoundError("the collection was deleted")
            if aligner_version is not None:
                row.aligner_version = aligner_version
            if index is not None:
                row.index_type, row.index_params = index
            if bump_epoch or index is not None:
                row.index_epoch += 1
        self._forget_collections()
        return row

    def delete_collection(self, collection_id: int) -> None:
        """Remove a collection with its items, tags and change log (however many: without
        the statement time limit)."""
        with self.sessions.begin() as session, no_time_limit(session.connection()):
            item_pks = select(ItemRow.pk).where(ItemRow.collection_id == collection_id)
            session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk.in_(item_pks)))
            session.execute(delete(ItemRow).where(ItemRow.collection_id == collection_id))
            session.execute(delete(ChangeRow).where(ChangeRow.collection_id == collection_id))
            session.execute(delete(AlignerRow).where(AlignerRow.collection_id == collection_id))
            session.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))
        self._forget_collections()

    def count_items(self, collection_id: int) -> int:
        """How many items the collection holds."""
        with self.sessions() as session:
            stmt = select(func.count()).where(ItemRow.collection_id == collection_id)
            return int(session.scalar(stmt) or 0)

    # -- items ---------------------------------------------------------------------------
    def upsert_item(self, *, collection_id: int, draft: ItemDraft) -> Upserted:
        """Insert or replace (same client id) an item."""
        try:
            return self._upsert(collection_id, draft)
        except IntegrityError:
            pass
        # Either two writers raced on a new client id (the loser replaces the winner's row)
        # or the collection was deleted meanwhile (the foreign key refuses the row).
        try:
            return self._upsert(collection_id, draft)
        except IntegrityError as exc:
            if not self._collection_exists(collection_id):
                raise NotFoundError("the collection was deleted during the write") from exc
            raise

    def _collection_exists(self, collection_id: int) -> bool:
        with self.sessions() as session:
            return session.get(CollectionRow, collection_id) is not None

    def _upsert(self, collection_id: int, draft: ItemDraft) -> Upserted:
        now = utcnow()
        with self.sessions.begin() as session:
            row = session.scalar(
                select(ItemRow).where(
                    ItemRow.collection_id == collection_id,
                    ItemRow.external_id == draft.external_id,
                )
            )
            created = row is None
            replaced_sha = None if row is None else row.sha256
            if row is None:
                row = ItemRow(collection_id=collection_id, external_id=draft.external_id)
                row.created_at = now
                session.add(row)
            row.modality = draft.modality
            row.sha256 = draft.sha256
            row.content_type = draft.content_type
            row.size_bytes = draft.size_bytes
            row.text = draft.text
            row.meta = draft.metadata
            row.feature = to_blob(draft.feature)
            row.vector = to_blob(draft.vector)
            row.spans = draft.spans
            row.aligner_version = draft.aligner_version
            row.updated_at = now
            session.flush()
            self._write_tags(session, row)
            session.add(ChangeRow(collection_id=collection_id, item_pk=row.pk, op="upsert"))
        return Upserted(row, created, replaced_sha)

    def _write_tags(self, session: Session, row: ItemRow) -> None:
        session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk == row.pk))
        session.add_all(
            ItemTagRow(item_pk=row.pk, key=k, value=v, collection_id=row.collection_id)
            for k, v in sorted(tag_pairs(row.meta))
        )

    def get_item(self, *, collection_id: int, external_id: str) -> ItemRow:
        """The item by client id; NotFoundError when there is none."""
        with self.sessions() as session:
            return _find_item(session, collection_id, external_id)

    def set_metadata(
        self, *, collection_id: int, external_id: str, metadata: dict[str, Any]
    ) -> ItemRow:
        """Replace an item's metadata (and its tags) without touching its vector."""
        with self.sessions.begin() as session:
            row = _find_item(session, collection_id, external_id)
            row.meta = metadata
            row.updated_at = utcnow()
            self._write_tags(session, row)
        return row

    def delete_item(self, *, collection_id: int, external_id: str) -> ItemRow:
        """Delete an item and log it; NotFoundError when there is none."""
        with self.sessions.begin() as session:
            row = _find_item(session, collection_id, external_id)
            session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk == row.pk))
            session.delete(row)
            session.add(ChangeRow(collection_id=collection_id, item_pk=row.pk, op="delete"))
        return row

    def list_items(self, *, collection_id: int, after_pk: int, limit: int) -> list[ItemRow]:
        """Items after a primary key, oldest first (keyset pagination)."""
        with self.sessions() as session:
            stmt = (
                select(ItemRow)
                .where(ItemRow.collection_id == collection_id, ItemRow.pk > after_pk)
                .order_by(ItemRow.pk)
                .limit(limit)
            )
            return list(session.scalars(stmt))

    def reads_without_waiting(self) -> bool:
        """Whether a read here now finds a connection without waiting for one: the
        embedded SQLite database (no round trip; WAL readers never wait for writers) with
        fewer connections in use than the pool keeps."""
        if self.engine.dialect.name != "sqlite":
            return False
        pool = self.engine.pool
        return isinstance(pool, QueuePool) and pool.checkedout() < pool.size()

    def items_by_pk(self, *, collection_id: int, pks: Sequence[int]) -> dict[int, ItemSummary]:
        """Items by primary key (those still present): every column but the feature and
        vector blobs. Search hydrates its hits with this on every query, so it goes to the
        driver with a plain SELECT: SQLAlchemy's execution and type processing cost a
        search several times what the database did (0.8 of 0.9 ms for 10 hits)."""
        if not pks:
            return {}
        sql = _summary_sql(self.engine.dialect.paramstyle, len(pks))
        driver = self.engine.raw_connection()
        try:
            cursor = driver.cursor()
            try:
                cursor.execute(sql, (collection_id, *(int(pk) for pk in pks)))
                rows = cursor.fetchall()
            finally:
                cursor.close()
            driver.commit()  # ends the read transaction (psycopg opens one)
        finally:
            driver.close()  # back to the pool
        return {row[0]: _summary(row) for row in rows}

    def shas_in_use(self, shas: set[str]) -> set[str]:
        """Which of these digests some item (of any collection) still points at."""
        found: set[str] = set()
        ordered = sorted(shas)
        with self.sessions() as session:
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                stmt = select(ItemRow.sha256).where(ItemRow.sha256.in_(chunk)).distinct()
                found.update(session.scalars(stmt))
        return found

    def collection_shas(self, collection_id: int) -> set[str]:
        """The digests of a collection's items."""
        with self.sessions() as session:
            stmt = select(ItemRow.sha256).where(ItemRow.collection_id == collection_id)
            return set(session.scalars(stmt.distinct()))

    # -- search support ------------------------------------------------------------------
    def matching_pks(
        self,
        *,
        collection_id: int,
        modalities: Sequence[str] | None,
        filters: dict[str, Scalar | list[Scalar]] | None,
    ) -> np.ndarray:
        """Primary keys of the items that pass the modality and metadata filters."""
        stmt = select(ItemRow.pk).where(ItemRow.collection_id == collection_id)
        if modalities:
            stmt = stmt.where(ItemRow.modality.in_(list(modalities)))
        for key, wanted in (filters or {}).items():
            if not storable(key):
                return np.zeros(0, dtype=np.int64)  # no stored key can hold it
            values = wanted if isinstance(wanted, list) else [wanted]
            tagged = select(ItemTagRow.item_pk).where(
                ItemTagRow.collection_id == collection_id,
                ItemTagRow.key == key,
                ItemTagRow.value.in_([canonical(v) for v in values]),
            )
            stmt = stmt.where(ItemRow.pk.in_(tagged))
        with self.sessions() as session:
            return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def tagged(self, *, collection_id: int, key: str) -> list[tuple[int, str]]:
        """(item key, canonical JSON value) of every item with a scalar under ``key``."""
        if not storable(key):
            return []
        stmt = (
            select(ItemTagRow.item_pk, ItemTagRow.value)
            .where(ItemTagRow.collection_id == collection_id, ItemTagRow.key == key)
            .order_by(ItemTagRow.item_pk)
        )
        with self.sessions() as session:
            return [(int(pk), str(v)) for pk, v in session.execute(stmt)]

    def pks_of(self, *, collection_id: int, external_ids: Sequence[str]) -> dict[str, int]:
        """Item keys of client ids (those present)."""
        wanted = sorted({e for e in external_ids if storable(e)})
        found: dict[str, int] = {}
        with self.sessions() as session:
            for start in range(0, len(wanted), 500):
                stmt = select(ItemRow.external_id, ItemRow.pk).where(
                    ItemRow.collection_id == collection_id,
                    ItemRow.external_id.in_(wanted[start : start + 500]),
                )
                found.update({e: int(pk) for e, pk in session.execute(stmt)})
        return found

    # -- index support ------------------------------------------------------------------
    def iter_stored(
        self,
        *,
        collection_id: int,
        pks: Sequence[int] | None = None,
        modality: str | None = None,
        chunk: int = 4096,
    ) -> Iterator[list[StoredVectors]]:
        """Items' stored features and vectors in chunks: the whole collection, or some keys
        (sent ``chunk`` at a time: a statement binds at most 32,766 values on SQLite)."""
        if pks is None:
            yield from self._iter_stored(collection_id, None, modality, chunk)
            return
        keys = sorted(set(pks))
        for start in range(0, len(keys), chunk):
            yield from self._iter_stored(
                collection_id, keys[start : start + chunk], modality, chunk
            )

    def _iter_stored(
        self, collection_id: int, pks: list[int] | None, modality: str | None, chunk: int
    ) -> Iterator[list[StoredVectors]]:
        last = 0
        with self.sessions() as session:
            while True:
                stmt = select(
                    ItemRow.pk,
                    ItemRow.modality,
                    ItemRow.aligner_version,
                    ItemRow.feature,
                    ItemRow.vector,
                ).where(ItemRow.collection_id == collection_id, ItemRow.pk > last)
                if pks is not None:
                    stmt = stmt.where(ItemRow.pk.in_(pks))
                if modality is not None:
                    stmt = stmt.where(ItemRow.modality == modality)
                rows = session.execute(stmt.order_by(ItemRow.pk).limit(chunk)).all()
                if not rows:
                    return
                yield [StoredVectors(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]
                last = int(rows[-1][0])

    def last_seq(self, collection_id: int) -> int:
        """The newest change-log sequence of a collection, pruned ones included (0 when none)."""
        with self.sessions() as session:
            stmt = select(func.max(ChangeRow.seq)).where(ChangeRow.collection_id == collection_id)
            newest = int(session.scalar(stmt) or 0)
            pruned = session.scalar(
                select(CollectionRow.changes_pruned_seq).where(CollectionRow.id == collection_id)
            )
        return max(newest, int(pruned or 0))

    def prune_changes(self, *, collection_id: int, upto_seq: int) -> None:
        """Forget the change log up to a sequence a durable snapshot reflects."""
        with self.sessions.begin() as session:
            session.execute(
                delete(ChangeRow).where(
                    ChangeRow.collection_id == collection_id, ChangeRow.seq <= upto_seq
                )
            )
            row = session.get(CollectionRow, collection_id)
            if row is not None:
                row.changes_pruned_seq = max(row.changes_pruned_seq, upto_seq)
        self._forget_collections()

    def changed_since(self, *, collection_id: int, seq: int) -> tuple[set[int], int]:
        """Item keys touched after a sequence, and the newest sequence seen."""
        with self.sessions() as session:
            rows = session.execute(
                select(ChangeRow.seq, ChangeRow.item_pk).where(
                    ChangeRow.collection_id == collection_id, ChangeRow.seq > seq
                )
            ).all()
        newest = max((r[0] for r in rows), default=seq)
        return {int(r[1]) for r in rows}, int(newest)
