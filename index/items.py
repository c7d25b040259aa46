"""Items in SQL with their tags: every write is one transaction that also appends to the
change log, which the indexes of every process follow (index/changes.py)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, case, delete, func, null, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from index import fulltext
from index.bulk import insert_keyed, insert_rows, one_of
from index.columns import (
    Scalar,
    StoredFeatures,
    canonical,
    storable,
    tag_pairs,
    to_blob,
    to_features,
)
from index.db import engine_of, no_time_limit, unmapped
from index.errors import NotFoundError, SpaceChangedError
from index.summaries import ItemSummary, read_summaries, summary_of
from index.tables import ChangeRow, CollectionRow, ItemRow, ItemTagRow, utcnow
from index.wakeup import CHANNEL, announce, sender

# Keys per IN (...) list: under the bound on a statement's variables of SQLite before 3.32
# (999).
IN_CHUNK = 500
# Rows an index build, replay or scan reads a query (``ItemStore.iter_stored``): a few MB of
# vectors at a time, however large the collection (docs/performance.md, "Memory").
LOAD_CHUNK = 4096


@dataclass
class ItemDraft:
    """What an ingest has computed, ready to be written."""

    external_id: str
    modality: str
    sha256: str
    content_type: str
    size_bytes: int
    # Raw features, or already in their column's form (``index.columns.store_features``).
    feature: np.ndarray | StoredFeatures
    # None: not stored, as the aligner version's projection of ``feature`` gives it again
    # bit for bit (an identity head: see ``current_vectors``). Half an item's bytes.
    vector: np.ndarray | None
    aligner_version: int
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    spans: list[list[float]] | None = None  # per-segment [start, end] seconds of a recording


@dataclass(frozen=True)
class StoredVectors:
    """What rebuilding an index needs of an item: its raw features and stored vectors
    (``vector`` empty: derived from the features, see ``index.builds.current_vectors``)."""

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
    """The outcome of an upsert: the row, whether it is new, the digest it replaced, and
    the change-log sequence of the write."""

    row: ItemSummary
    created: bool
    replaced_sha: str | None
    seq: int = 0
    # The collection's newest change-log position before the write (its newest sequence, or
    # how far its log was pruned): the write's own changes come right after it. None: not
    # read (a process's index must then find the write in the log).
    after: int | None = None


@dataclass
class Deleted:
    """The outcome of a delete: the row as it was, and the change-log sequence of the write."""

    row: ItemRow
    seq: int


def lock_collection(session: Session, collection_id: int) -> None:
    """Take the collection's write lock first thing in a write transaction: everything the
    transaction reads afterwards (the item under an id, the change-log sequence it draws) stays
    true until its commit, whichever process writes beside it.

    Postgres hands out sequence values in call order but transactions commit in any order:
    without the lock, a write could take seq 10, another seq 11 and commit first, and a
    follower that read up to 11 would never look at 10 again. Holding the collection's row
    (``FOR NO KEY UPDATE``: foreign-key checks and readers pass) from before the draw until
    the commit means every write to one collection draws and commits in the same order, so
    "every change after the newest one I saw" misses nothing (invariant 8; the follower is
    ``IndexManager.catch_up``). SQLite runs one write transaction at a time, but Python's
    driver only begins it at the first INSERT, UPDATE or DELETE: the reads before that see the
    database as it was, and another process may change it before this one writes (an update
    of a row a concurrent delete removed). ``BEGIN IMMEDIATE`` as the first statement takes
    the database's write lock (waiting up to ``busy_timeout``) before anything is read (it
    cost less than a no-op UPDATE: 1.5 against 1.7 ms a stored item, fsync included).
    """
    if session.get_bind().dialect.name == "sqlite":
        # Python's driver opened no transaction yet: this one starts holding the lock.
        conn = session.connection()
        driver = conn.connection.dbapi_connection
        if driver is not None and not driver.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    session.execute(
        select(CollectionRow.id)
        .where(CollectionRow.id == collection_id)
        .with_for_update(key_share=True)
    )


def _lock_in_space(
    session: Session, collection_id: int, space: tuple[str, str | None, int]
) -> None:
    """``lock_collection``, then refuse features of ``space`` (model, audio model, dimension)
    once the collection records another. On Postgres one statement does both (a round trip
    less for every batch)."""
    stmt = select(CollectionRow.model, CollectionRow.audio_model, CollectionRow.dim).where(
        CollectionRow.id == collection_id
    )
    if session.get_bind().dialect.name == "sqlite":
        lock_collection(session, collection_id)
    else:
        stmt = stmt.with_for_update(key_share=True)  # what lock_collection takes
    recorded = session.execute(stmt).first()
    if recorded is None:
        raise NotFoundError("the collection was deleted during the write")
    if tuple(recorded) != space:
        raise SpaceChangedError(
            f"the collection moved to model {recorded[0]} while this write was encoded with "
            f"{space[0]}: send it again"
        )


def _log_position(session: Session, collection_id: int) -> int:
    """The collection's newest change-log sequence, or how far its log was pruned if that is
    further: read under the collection's lock, so the changes a write appends next are the
    only ones after it until the commit."""
    newest = (
        select(func.max(ChangeRow.seq))
        .where(ChangeRow.collection_id == collection_id)
        .scalar_subquery()
    )
    found = session.execute(
        select(newest, CollectionRow.changes_pruned_seq).where(CollectionRow.id == collection_id)
    ).first()
    return 0 if found is None else max(int(found[0] or 0), int(found[1] or 0))


def _log_upserts(
    session: Session, collection_id: int, pks: Sequence[int], *, own: bool
) -> tuple[int, list[int]]:
    """Append an upsert to the change log for each item (in order) and announce it: the log
    position before them (``_log_position``) and their sequences, ascending.

    On Postgres one statement does the three (two round trips less a batch, each a wait for
    the database's process under the collection's locks, on a busy machine a millisecond or
    more): the position is read in the statement's snapshot, which does not see its own
    inserts (the sub-statements of a ``WITH`` share one snapshot), taken after the
    collection's lock, as the separate read was."""
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        after = _log_position(session, collection_id)
        rows = [{"collection_id": collection_id, "item_pk": pk, "op": "upsert"} for pk in pks]
        seqs = insert_keyed(session, ChangeRow, "seq", rows)
        announce(session, own=own)
        return after, seqs
    changes = dialect.identifier_preparer.format_table(ChangeRow.__table__)
    collections = dialect.identifier_preparer.format_table(CollectionRow.__table__)
    sql = (
        "WITH pos AS (SELECT greatest("
        f"coalesce((SELECT max(seq) FROM {changes} WHERE collection_id = %(c)s::BIGINT), 0), "
        f"coalesce((SELECT changes_pruned_seq FROM {collections} WHERE id = %(c)s::BIGINT), 0)"
        ") AS after), "
        "note AS (SELECT pg_notify(%(channel)s, %(sender)s)), "
        f"ins AS (INSERT INTO {changes} (collection_id, item_pk, op) "
        "SELECT %(c)s::BIGINT, p, 'upsert' "
        "FROM unnest(%(pks)b::BIGINT[]) WITH ORDINALITY AS u(p, n) ORDER BY n RETURNING seq) "
        "SELECT ins.seq, pos.after FROM ins CROSS JOIN pos CROSS JOIN note"
    )
    params = {
        "c": collection_id,
        "channel": CHANNEL,
        "sender": sender() if own else "",
        "pks": list(pks),
    }
    found = connection.exec_driver_sql(sql, params).all()
    after = int(found[0][1]) if found else _log_position(session, collection_id)
    return after, sorted(int(seq) for seq, _ in found)


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


def _write_tags(
    session: Session,
    collection_id: int,
    items: Sequence[tuple[int, dict[str, Any]]],
    existing: Set[int],
) -> None:
    """Items' tags from their metadata (``items``: primary key and metadata), in place of
    those they had (``existing``: the primary keys of items that may have some)."""
    old = sorted(existing & {pk for pk, _ in items})
    for start in range(0, len(old), IN_CHUNK):
        chunk = old[start : start + IN_CHUNK]
        session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk.in_(chunk)))
    tags = [
        {"item_pk": pk, "key": k, "value": v, "collection_id": collection_id}
        for pk, meta in items
        for k, v in sorted(tag_pairs(meta))
    ]
    insert_rows(session, ItemTagRow, tags)


def _rows_by_id(session: Session, collection_id: int, ids: Sequence[str]) -> dict[str, ItemRow]:
    """The collection's items under these client ids (as given), by id."""
    wanted = list(dict.fromkeys(ids))
    rows: dict[str, ItemRow] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        stmt = select(ItemRow).where(
            ItemRow.collection_id == collection_id, one_of(session, ItemRow.external_id, chunk)
        )
        rows.update((row.external_id, row) for row in session.scalars(stmt))
    return rows


def vector_blob(vectors: np.ndarray | None) -> bytes:
    """A row's ``vector`` column: empty when the vectors are derived from the features."""
    return b"" if vectors is None else to_blob(vectors)


def feature_blob(feature: np.ndarray | StoredFeatures) -> bytes:
    """A row's ``feature`` column."""
    return feature.blob if isinstance(feature, StoredFeatures) else to_features(feature)


def _values(collection_id: int, draft: ItemDraft, now: datetime) -> dict[str, Any]:
    """A new row's columns (by attribute name) from a draft."""
    return {
        "collection_id": collection_id,
        "external_id": draft.external_id,
        "modality": draft.modality,
        "sha256": draft.sha256,
        "content_type": draft.content_type,
        "size_bytes": draft.size_bytes,
        "text": draft.text,
        "meta": draft.metadata,
        "feature": feature_blob(draft.feature),
        "vector": vector_blob(draft.vector),
        "spans": draft.spans,
        "aligner_version": draft.aligner_version,
        "created_at": now,
        "updated_at": now,
    }


def _fill(row: ItemRow, draft: ItemDraft, now: datetime) -> None:
    row.modality = draft.modality
    row.sha256 = draft.sha256
    row.content_type = draft.content_type
    row.size_bytes = draft.size_bytes
    row.text = draft.text
    row.meta = draft.metadata
    row.feature = feature_blob(draft.feature)
    row.vector = vector_blob(draft.vector)
    row.spans = draft.spans
    row.aligner_version = draft.aligner_version
    row.updated_at = now


def _conditions(
    collection_id: int,
    modalities: Sequence[str] | None,
    filters: dict[str, Scalar | list[Scalar]] | None,
) -> list[ColumnElement[bool]] | None:
    """What an item of the collection must satisfy to pass the modality and metadata
    filters; None when nothing can (a key no column can hold)."""
    conditions = [ItemRow.collection_id == collection_id]
    if modalities:
        conditions.append(ItemRow.modality.in_(list(modalities)))
    for key, wanted in (filters or {}).items():
        if not storable(key):
            return None
        values = wanted if isinstance(wanted, list) else [wanted]
        tagged = select(ItemTagRow.item_pk).where(
            ItemTagRow.collection_id == collection_id,
            ItemTagRow.key == key,
            ItemTagRow.value.in_([canonical(v) for v in values]),
        )
        conditions.append(ItemRow.pk.in_(tagged))
    return conditions


class ItemStore:
    """Items, their tags and their stored vectors, over any SQLAlchemy engine."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.engine = engine_of(sessions)

    # -- writes ----------------------------------------------------------------------------
    def upsert(self, *, collection_id: int, draft: ItemDraft) -> Upserted:
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

    def upsert_many(
        self,
        *,
        collection_id: int,
        drafts: Sequence[ItemDraft],
        space: tuple[str, str | None, int] | None = None,
        own: bool = False,
    ) -> list[Upserted]:
        """Insert or replace many items in one transaction (one commit), each as ``upsert``
        would, in order: a later draft of an id replaces an earlier one of the same batch.
        NotFoundError when the collection is gone; SpaceChangedError when ``space`` (model,
        audio model, dimension) is given and is no longer the collection's (the drafts'
        features are of another space); any other failure commits nothing. ``own``: the
        caller puts the items in this process's index itself (``index.wakeup.announce``)."""
        try:
            return self._upsert_many(collection_id, drafts, space, own)
        except IntegrityError as exc:
            if not self._collection_exists(collection_id):
                raise NotFoundError("the collection was deleted during the write") from exc
            raise

    def _upsert(self, collection_id: int, draft: ItemDraft) -> Upserted:
        return self._upsert_many(collection_id, [draft], None, False)[0]

    def _upsert_many(
        self,
        collection_id: int,
        drafts: Sequence[ItemDraft],
        space: tuple[str, str | None, int] | None,
        own: bool,
    ) -> list[Upserted]:
        """New ids are inserted and the change log appended a statement each for the whole
        batch (``index.bulk``): the ORM's unit of work, and then SQLAlchemy's own multi-row
        insert (one statement a row on SQLite), cost more than the rest of a batch's write
        together. Ids already stored are updated through the ORM."""
        now = utcnow()
        with self.sessions.begin() as session:
            if space is None:
                lock_collection(session, collection_id)
            else:
                _lock_in_space(session, collection_id, space)
            rows = _rows_by_id(session, collection_id, [d.external_id for d in drafts])
            existing = {row.pk for row in rows.values()}
            # What each draft finds (created, and the sha it replaces); the last draft of an
            # id is what SQL keeps.
            current = {external_id: row.sha256 for external_id, row in rows.items()}
            outcomes = []
            last: dict[str, ItemDraft] = {}
            for draft in drafts:
                replaced = current.get(draft.external_id)
                outcomes.append((draft.external_id not in current, replaced))
                current[draft.external_id] = draft.sha256
                last[draft.external_id] = draft
            # What the write answers with: plain records (an ORM row costs 50 µs to build).
            written: dict[str, ItemSummary] = {}
            for external_id, row in rows.items():
                if external_id in last:
                    _fill(row, last[external_id], now)
                    written[external_id] = summary_of(row)
            session.flush()
            new = [d for external_id, d in last.items() if external_id not in rows]
            if new:
                values = [_values(collection_id, d, now) for d in new]
                keys = insert_keyed(session, ItemRow, "pk", values)
                for draft, value, pk in zip(new, values, keys, strict=True):
                    written[draft.external_id] = summary_of(value, pk=pk)
            _write_tags(
                session,
                collection_id,
                [(written[external_id].pk, d.metadata) for external_id, d in last.items()],
                existing,
            )
            pks = [written[d.external_id].pk for d in drafts]
            after, seqs = _log_upserts(session, collection_id, pks, own=own)
        return [
            Upserted(written[draft.external_id], created, replaced_sha, int(seq), after)
            for draft, (created, replaced_sha), seq in zip(drafts, outcomes, seqs, strict=True)
        ]

    def set_metadata(
        self, *, collection_id: int, external_id: str, metadata: dict[str, Any]
    ) -> ItemRow:
        """Replace an item's metadata (and its tags) without touching its vector."""
        with self.sessions.begin() as session:
            lock_collection(session, collection_id)  # a concurrent delete cannot slip in between
            row = _find_item(session, collection_id, external_id)
            row.meta = metadata
            row.updated_at = utcnow()
            _write_tags(session, collection_id, [(row.pk, metadata)], {row.pk})
        return row

    def delete(self, *, collection_id: int, external_id: str, own: bool = False) -> Deleted:
        """Delete an item and log it; NotFoundError when there is none. ``own``: the caller
        takes it out of this process's index itself (``index.wakeup.announce``)."""
        with self.sessions.begin() as session:
            lock_collection(session, collection_id)
            row = _find_item(session, collection_id, external_id)
            session.execute(delete(ItemTagRow).where(ItemTagRow.item_pk == row.pk))
            session.delete(row)
            change = ChangeRow(collection_id=collection_id, item_pk=row.pk, op="delete")
            session.add(change)
            session.flush()
            seq = change.seq
            announce(session, own=own)
        return Deleted(row, seq)

    # -- reads -----------------------------------------------------------------------------
    def get(self, *, collection_id: int, external_id: str) -> ItemRow:
        """The item by client id; NotFoundError when there is none."""
        with self.sessions() as session:
            return _find_item(session, collection_id, external_id)

    def page(self, *, collection_id: int, after_pk: int, limit: int) -> list[ItemRow]:
        """Items after a primary key, oldest first (keyset pagination)."""
        with self.sessions() as session:
            stmt = (
                select(ItemRow)
                .where(ItemRow.collection_id == collection_id, ItemRow.pk > after_pk)
                .order_by(ItemRow.pk)
                .limit(limit)
            )
            return list(session.scalars(stmt))

    def count(self, collection_id: int) -> int:
        """How many items the collection holds."""
        with self.sessions() as session:
            stmt = select(func.count()).where(ItemRow.collection_id == collection_id)
            return int(session.scalar(stmt) or 0)

    def summaries(self, *, collection_id: int, pks: Sequence[int]) -> dict[int, ItemSummary]:
        """Items by primary key (those still present), without their blobs: what search
        hydrates its hits with (index/summaries.py says why it skips the ORM)."""
        return read_summaries(self.engine, collection_id, pks)

    def shas_in_use(self, shas: set[str]) -> set[str]:
        """Which of these digests some item (of any collection) still points at."""
        found: set[str] = set()
        ordered = sorted(shas)
        with self.sessions() as session:
            for start in range(0, len(ordered), IN_CHUNK):
                chunk = ordered[start : start + IN_CHUNK]
                stmt = select(ItemRow.sha256).where(ItemRow.sha256.in_(chunk)).distinct()
                found.update(session.scalars(stmt))
        return found

    def collection_shas(self, collection_id: int) -> set[str]:
        """The digests of a collection's items."""
        with self.sessions() as session:
            stmt = select(ItemRow.sha256).where(ItemRow.collection_id == collection_id)
            return set(session.scalars(stmt.distinct()))

    # -- search and training support -------------------------------------------------------
    def matching_pks(
        self,
        *,
        collection_id: int,
        modalities: Sequence[str] | None,
        filters: dict[str, Scalar | list[Scalar]] | None,
    ) -> np.ndarray:
        """Primary keys of the items that pass the modality and metadata filters."""
        conditions = _conditions(collection_id, modalities, filters)
        if conditions is None:
            return np.zeros(0, dtype=np.int64)  # no stored key can hold a filter's key
        with self.sessions() as session:
            stmt = select(ItemRow.pk).where(*conditions)
            return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def lexical(
        self,
        *,
        collection_id: int,
        query: str,
        modalities: Sequence[str] | None,
        filters: dict[str, Scalar | list[Scalar]] | None,
        limit: int,
        among: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """The items whose text or metadata values match the query's words and that pass
        the filters (and are ``among`` these keys, when given), best
        first, at most ``limit``: (item key, score in [0, 1))."""
        conditions = _conditions(collection_id, modalities, filters)
        if conditions is None:
            return []
        keys = [None] if among is None else list(among)
        found: list[tuple[int, float]] = []
        with self.sessions() as session:
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start : start + IN_CHUNK]
                within = [] if among is None else [ItemRow.pk.in_(chunk)]
                found += fulltext.search(
                    session,
                    query=query,
                    collection_id=collection_id,
                    conditions=[*conditions, *within],
                    limit=limit,
                )
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))[:limit]

    def specificity(self, *, collection_id: int, query: str) -> float:
        """How specific the query's rarest word is in the collection, in [0, 1]
        (index.fulltext.specificity): hybrid search's lexical weight follows it."""
        with self.sessions() as session:
            return fulltext.specificity(session, query=query, collection_id=collection_id)

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
            for start in range(0, len(wanted), IN_CHUNK):
                stmt = select(ItemRow.external_id, ItemRow.pk).where(
                    ItemRow.collection_id == collection_id,
                    ItemRow.external_id.in_(wanted[start : start + IN_CHUNK]),
                )
                found.update({e: int(pk) for e, pk in session.execute(stmt)})
        return found

    # -- index support ---------------------------------------------------------------------
    def vector_count(self, collection_id: int, dim: int) -> int:
        """How many vectors (a recording's segments each) the collection's items hold: what
        an index build sizes its IVF lists by and an ``auto`` index is chosen for
        (index.spec.auto_spec), read from the blobs' lengths, not the blobs."""
        # A row without stored vectors is an image's or a text's: one vector.
        width = 4 * dim
        derived = and_(func.length(ItemRow.vector) == 0, ItemRow.modality.in_(("image", "text")))
        rows = case((derived, width), else_=func.length(ItemRow.vector))
        stmt = select(func.coalesce(func.sum(rows), 0)).where(
            ItemRow.collection_id == collection_id
        )
        # A read of every row (10M: a minute on SQLite): work that grows with the data, not
        # with a request, so past the statement time limit (at start-up it stopped the server).
        with (
            self.sessions() as session,
            no_time_limit(session.connection()),
            unmapped(session.connection()),
        ):
            return int(session.scalar(stmt) or 0) // width

    def iter_stored(
        self,
        *,
        collection_id: int,
        pks: Sequence[int] | None = None,
        modality: str | None = None,
        chunk: int | None = None,
        features_unless: int | None = None,
    ) -> Iterator[list[StoredVectors]]:
        """Items' stored features and vectors in chunks of at most ``chunk`` rows (default
        :data:`LOAD_CHUNK`), one query each: the whole collection, or some keys. What a
        caller holds at once is one chunk, whatever the collection's size.

        ``features_unless``: an aligner version whose rows' raw features are not read where
        their vectors are stored (``feature`` comes back empty): an index build needs only the
        stored vectors of the version it serves."""
        size = chunk or LOAD_CHUNK
        if pks is None:
            yield from self._iter_stored(collection_id, None, modality, size, features_unless)
            return
        keys = sorted(set(pks))
        for start in range(0, len(keys), size):
            yield from self._iter_stored(
                collection_id, keys[start : start + size], modality, size, features_unless
            )

    def _iter_stored(
        self,
        collection_id: int,
        pks: list[int] | None,
        modality: str | None,
        chunk: int,
        features_unless: int | None,
    ) -> Iterator[list[StoredVectors]]:
        feature: Any = ItemRow.feature
        if features_unless is not None:
            kept = and_(ItemRow.aligner_version == features_unless, func.length(ItemRow.vector) > 0)
            feature = case((kept, null()), else_=feature).label("feature")
        last = 0
        # Keyset pages, a session each: no transaction (nor Postgres snapshot) stays open
        # across a long build, and nothing of a page outlives the next one.
        while True:
            stmt = select(
                ItemRow.pk, ItemRow.modality, ItemRow.aligner_version, feature, ItemRow.vector
            ).where(ItemRow.collection_id == collection_id, ItemRow.pk > last)
            if pks is not None:
                stmt = stmt.where(ItemRow.pk.in_(pks))
            if modality is not None:
                stmt = stmt.where(ItemRow.modality == modality)
            with self.sessions() as session, unmapped(session.connection()):
                rows = session.execute(stmt.order_by(ItemRow.pk).limit(chunk)).all()
            if not rows:
                return
            last = int(rows[-1][0])
            page = [StoredVectors(int(r[0]), r[1], int(r[2]), r[3] or b"", r[4]) for r in rows]
            del rows
            yield page
            if len(page) < chunk:
                return
