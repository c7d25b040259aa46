"""SQL schema (SQLAlchemy 2). The database is the source of truth; FAISS is derived from it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# int64 everywhere (FAISS ids are SQL primary keys); SQLite only autoincrements INTEGER.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the store uses."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class CollectionRow(Base):
    """One collection = one embedding space (model id + aligner version + dim)."""

    __tablename__ = "collections"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    model: Mapped[str] = mapped_column(String(512))
    dim: Mapped[int] = mapped_column(Integer)
    # The active row of ``aligners`` (0: the implicit identity of pre-0003 collections).
    aligner_version: Mapped[int] = mapped_column(Integer, default=0)
    # The audio encoder whose raw features the audio head takes; None: no audio.
    audio_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    index_type: Mapped[str] = mapped_column(String(32), default="flat")
    index_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped by a reindex: a live index built for another epoch is rebuilt and swapped.
    index_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Change-log rows up to this sequence are deleted: older snapshots cannot be replayed.
    changes_pruned_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ItemRow(Base):
    """An item: provenance, metadata, raw encoder features and aligned vectors.

    ``feature`` and ``vector`` hold one float32 row per segment (one for images and texts);
    ``spans`` gives each segment's ``[start, end]`` in seconds for recordings.
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_items_collection_external"),
        {"sqlite_autoincrement": True},
    )

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str] = mapped_column(String(255))
    modality: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    feature: Mapped[bytes] = mapped_column(LargeBinary)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    spans: Mapped[list[list[float]] | None] = mapped_column(JSON, nullable=True)
    aligner_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AlignerRow(Base):
    """One version of a collection's aligner heads: the artefact and how it was made."""

    __tablename__ = "aligners"
    __table_args__ = (
        UniqueConstraint("collection_id", "version", name="uq_aligners_collection_version"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    artefact: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @classmethod
    def of(
        cls, collection_id: int, version: int, artefact: bytes, meta: dict[str, Any]
    ) -> AlignerRow:
        """A version about to be recorded, with its artefact's digest and the time now."""
        return cls(
            collection_id=collection_id,
            version=version,
            sha256=hashlib.sha256(artefact).hexdigest(),
            artefact=artefact,
            meta=meta,
            created_at=utcnow(),
        )


class ItemTagRow(Base):
    """One scalar metadata value of an item, canonical JSON: makes equality filters SQL."""

    __tablename__ = "item_tags"
    __table_args__ = (Index("ix_item_tags_lookup", "collection_id", "key", "value"),)

    item_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("items.pk", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024), primary_key=True)
    collection_id: Mapped[int] = mapped_column(BigInteger)


class ChangeRow(Base):
    """The change log: every write to an index, in commit order; snapshots record a seq."""

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_collection_seq", "collection_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(BigInteger)
    item_pk: Mapped[int] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(8))  # "upsert" | "delete"


class ReplicaPositionRow(Base):
    """How far one server process's index of a collection follows the change log: pruning
    keeps what a live process has not applied yet (invariant 8)."""

    __tablename__ = "replica_positions"

    replica: Mapped[str] = mapped_column(String(96), primary_key=True)
    collection_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    applied: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    """A background job (fine-tune, reindex): queued, claimed with a lease, finished."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_one_running_per_collection",
            "collection_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    collection_id: Mapped[int] = mapped_column(BigInteger, index=True)
    collection: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DuplicateListingRow(Base):
    """The pairs a duplicates job found in a collection at a threshold (of one modality, or
    of all): ``pairs`` holds them as arrays (index.pairs.Pairs.to_bytes), best first, keyed
    by item ``pk``; ``change_seq`` is the collection's change-log head it reflects."""

    __tablename__ = "duplicate_listings"
    __table_args__ = (Index("ix_duplicate_listings_collection", "collection_id", "modality"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE")
    )
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    threshold: Mapped[float] = mapped_column(Float)
    change_seq: Mapped[int] = mapped_column(BigInteger)
    aligner_version: Mapped[int] = mapped_column(Integer)
    index_epoch: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(512))
    count: Mapped[int] = mapped_column(Integer)
    pairs: Mapped[bytes] = mapped_column(LargeBinary)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpaceRow(Base):
    """An embedding space of a collection other than the one it serves: being built by a
    migrate job (``building``), or the one a migration left (``kept``, for a rollback until
    an operator confirms the switch). Its vectors are in ``space_vectors``; a kept space's
    aligner history in ``space_aligners``."""

    __tablename__ = "spaces"

    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(1100), primary_key=True)
    model: Mapped[str] = mapped_column(String(512))
    audio_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    dim: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # "building" | "kept"
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A kept space's index settings (a rollback builds that index again); None: building.
    index_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    index_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpaceVectorRow(Base):
    """One item's raw features and vectors in another space (``spaces``), made from the
    original whose digest it records: an item replaced since is encoded again."""

    __tablename__ = "space_vectors"
    __table_args__ = (Index("ix_space_vectors_space", "collection_id", "key"),)

    item_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("items.pk", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(1100), primary_key=True)
    collection_id: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    feature: Mapped[bytes] = mapped_column(LargeBinary)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    spans: Mapped[list[list[float]] | None] = mapped_column(JSON, nullable=True)
    aligner_version: Mapped[int] = mapped_column(Integer)


class SpaceAlignerRow(Base):
    """An aligner version of a kept space, as ``aligners`` held it before the switch."""

    __tablename__ = "space_aligners"

    collection_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(1100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str] = mapped_column(String(64))
    artefact: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeyRow(Base):
    """An API key made through /v1/keys: only its sha256 is kept, the key itself never."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(8))  # "read" | "write" | "admin"
    # The collection names the key may see; None: every collection.
    collections: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
