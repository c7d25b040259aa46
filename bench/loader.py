"""Bulk-load vectors into a collection below the HTTP layer (HTTP ingestion of 1M items
would take hours): the rows the metadata store writes for a text item, in 10k-row chunks,
while no server runs. The server then builds the index from SQL at start-up."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Table, insert, literal, select

from index.blobs import BlobStore
from index.columns import store_features
from index.db import make_engine
from index.tables import ChangeRow, CollectionRow, ItemRow, utcnow

TEXT = "bench vector"  # one shared text: one content-addressed blob serves every row
CONTENT_TYPE = "text/plain; charset=utf-8"  # what app.services.items writes for texts
CHUNK = 10_000
ITEMS: Table = ItemRow.__table__  # type: ignore[assignment]
CHANGES: Table = ChangeRow.__table__  # type: ignore[assignment]


def sqlite_url(data_dir: Path) -> str:
    """The server's default database in a data dir (Settings.resolved_database_url)."""
    return f"sqlite:///{(data_dir / 'mmr.sqlite3').resolve()}"


def served(vectors: np.ndarray) -> np.ndarray:
    """The unit vectors a collection of :func:`load_vectors`' rows serves for these: their
    features as stored (float16), normalised as a build projects them. The exact answers
    of the collection are computed on these (float16 moves a score by ~1e-4: as much as
    the gap between two neighbours of a clustered million)."""
    rows = np.concatenate([s.rows for s in store_features(list(vectors))])
    out: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out.astype(np.float32)


def load_vectors(data_dir: Path, collection: str, chunks: Iterable[np.ndarray]) -> dict[str, Any]:
    """Insert items ``"0".."n-1"`` (row numbers) whose features are the given unit vectors,
    plus their change-log rows; returns counts and seconds.

    Rows as the store writes a text item under an identity text head (the default aligner
    of open_clip and mmr-mini models): the feature in its column's form (float16 behind a
    header, index.columns.store_features) and no vector (a build projects the feature:
    the unit vector, within float16's rounding).
    """
    data = TEXT.encode("utf-8")
    sha = BlobStore(data_dir / "blobs").put(data)
    engine = make_engine(sqlite_url(data_dir))
    t0 = time.perf_counter()
    n = 0
    try:
        with engine.begin() as conn:
            row = conn.execute(
                select(CollectionRow.id, CollectionRow.aligner_version, CollectionRow.dim).where(
                    CollectionRow.name == collection
                )
            ).one()
        cid, version, dim = int(row[0]), int(row[1]), int(row[2])
        for chunk in chunks:
            if chunk.shape[1] != dim:
                raise ValueError(f"vectors of dim {chunk.shape[1]} for a collection of dim {dim}")
            now = utcnow()
            rows: list[dict[str, Any]] = [
                {
                    "collection_id": cid,
                    "external_id": str(n + i),
                    "modality": "text",
                    "sha256": sha,
                    "content_type": CONTENT_TYPE,
                    "size_bytes": len(data),
                    "text": TEXT,
                    "metadata": {},
                    "feature": blob,
                    "vector": b"",
                    "spans": None,
                    "aligner_version": version,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, blob in enumerate(s.blob for s in store_features(list(chunk)))
            ]
            for start in range(0, len(rows), CHUNK):
                with engine.begin() as conn:
                    conn.execute(insert(ITEMS), rows[start : start + CHUNK])
            n += len(rows)
        # The change log, as each upsert writes it: one row per item in commit order.
        with engine.begin() as conn:
            conn.execute(
                insert(CHANGES).from_select(
                    ["collection_id", "item_pk", "op"],
                    select(ItemRow.collection_id, ItemRow.pk, literal("upsert"))
                    .where(ItemRow.collection_id == cid)
                    .order_by(ItemRow.pk),
                )
            )
    finally:
        engine.dispose()
    return {"items": n, "seconds": time.perf_counter() - t0, "collection_id": cid}
