"""SQL rows to public schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.schemas.collections import CollectionPublic, IndexInfo
from app.schemas.items import ItemPublic
from app.schemas.jobs import JobPublic
from index.summaries import ItemSummary
from index.tables import CollectionRow, ItemRow, JobRow


def aware(ts: datetime) -> datetime:
    """SQLite hands back naive timestamps; every stored time is UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def item_public(row: ItemRow | ItemSummary, collection: str) -> ItemPublic:
    """The public view of an item."""
    return ItemPublic(
        id=row.external_id,
        collection=collection,
        modality=row.modality,
        metadata=row.meta,
        sha256=row.sha256,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        text=row.text,
        duration=max(end for _, end in row.spans) if row.spans else None,
        segments=len(row.spans) if row.spans else None,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


def collection_public(
    row: CollectionRow, *, count: int, index: dict[str, Any], compatible: bool
) -> CollectionPublic:
    """The public view of a collection."""
    return CollectionPublic(
        name=row.name,
        model=row.model,
        dim=row.dim,
        index_type=row.index_type,
        aligner_version=row.aligner_version,
        audio_model=row.audio_model,
        count=count,
        index=IndexInfo(**index),
        compatible=compatible,
        created_at=aware(row.created_at),
    )


def job_params(params: dict[str, Any]) -> dict[str, Any]:
    """A job's parameters as shown: explicit pairs as their count (a job may hold 50,000;
    every listing would send them all back)."""
    pairs = params.get("pairs")
    if not isinstance(pairs, list):
        return params
    shown = {k: v for k, v in params.items() if k != "pairs"}
    return {**shown, "pairs_count": len(pairs)}


def job_public(row: JobRow) -> JobPublic:
    """The public view of a job."""
    return JobPublic(
        id=row.id,
        type=row.type,
        collection=row.collection,
        status=row.status,
        progress=row.progress,
        params=job_params(row.params),
        metrics=row.metrics,
        error=row.error,
        attempts=row.attempts,
        worker=row.worker,
        created_at=aware(row.created_at),
        started_at=aware(row.started_at) if row.started_at else None,
        finished_at=aware(row.finished_at) if row.finished_at else None,
    )
