"""The ``duplicates`` job: a collection's duplicates listing computed in the background, with
no request deadline, and stored in SQL for ``GET .../duplicates`` to page.

Exact: every pair of items of one modality compared (index.pairs.range_pairs: FAISS's range
search of each block of rows against the rows after it; bench/duplicates.py measured it
faster than blocked numpy at 20,000 items). Memory holds the collection's vectors once
(n x dim float32) and one block's results, never an n x n matrix. Progress (phase, fraction,
eta_s) is reported between blocks, where a cancel is honoured too. More than MAX_PAIRS
pairs fail the job: a listing is the best MAX_PAIRS or nothing, as in the route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.services.duplicates import MAX_PAIRS, exact
from app.services.errors import InvalidInput
from app.services.jobs import JobContext
from app.state import Services
from index.errors import JobEndedError
from index.listings import ListingInfo
from index.pairs import Pairs, range_pairs
from index.tables import utcnow
from models.training.finetune import Cancelled

READING = 0.1  # share of the fraction reading the vectors stands for


@dataclass
class _Progress:
    """Reports a job's phase, fraction and ETA; raises Cancelled once it should stop."""

    ctx: JobContext
    items: int
    started: float = field(default_factory=time.monotonic)
    read: int = 0
    compared_from: float = 0.0

    def check(self) -> None:
        """Between chunks of items read (and blocks of recordings' work)."""
        if self.ctx.should_stop():
            raise Cancelled
        if self.compared_from == 0.0:
            self.read += 1
            share = min(1.0, self.read * 1024 / max(self.items, 1))
            self.ctx.report(phase="reading", fraction=round(READING * share, 4))

    def compared(self, done: int, total: int) -> None:
        """Between blocks of comparisons."""
        if self.ctx.should_stop():
            raise Cancelled
        now = time.monotonic()
        if self.compared_from == 0.0:
            self.compared_from = now
        share = done / max(total, 1)
        elapsed = now - self.compared_from
        eta = elapsed * (1 - share) / share if share > 0 else None
        self.ctx.report(
            phase="comparing",
            fraction=round(READING + (1 - READING) * share, 4),
            comparisons=done,
            eta_s=None if eta is None else round(eta, 1),
        )


def run_duplicates(services: Services, ctx: JobContext) -> dict[str, Any]:
    """Compute the listing, store it, and say what it holds."""
    stores = services.stores
    row = stores.collections.get_by_id(ctx.job.collection_id)
    threshold = float(np.float32(ctx.job.params["threshold"]))
    modality = ctx.job.params.get("modality")
    # The head before reading: the listing reflects at least this state (a write landing
    # while it reads makes it stale at once, never the other way round).
    head = stores.changes.last_seq(row.id)
    aligner = services.indexes.aligner_of(row)
    count = (
        stores.items.count(row.id)
        if modality is None
        else len(
            stores.items.matching_pks(collection_id=row.id, modalities=[modality], filters=None)
        )
    )
    progress = _Progress(ctx, count)
    ctx.report(phase="reading", fraction=0.0, items=count)

    def pairs_of(matrix: np.ndarray, floor: float) -> Pairs:
        return range_pairs(matrix, floor, cap=MAX_PAIRS, between=progress.compared)

    started = time.monotonic()
    pairs = exact(stores.items, row, aligner, threshold, modality, progress.check, pairs_of)
    if pairs.truncated:
        raise InvalidInput(
            f"more than {MAX_PAIRS} pairs of collection {row.name!r} are at least "
            f"{threshold:g} alike, more than a listing holds: post the job again with a "
            "higher threshold (duplicates score above the default, 0.98), or one modality"
        )
    info = ListingInfo(
        job_id=ctx.job.id,
        collection_id=row.id,
        modality=modality,
        threshold=threshold,
        change_seq=head,
        aligner_version=aligner.version,
        index_epoch=row.index_epoch,
        model=row.model,
        count=len(pairs),
        computed_at=utcnow(),
    )
    try:
        stores.listings.save(info, pairs.to_bytes(), worker=ctx.job.worker or "")
    except JobEndedError as exc:
        raise Cancelled from exc
    return {
        "items": count,
        "pairs": len(pairs),
        "threshold": ctx.job.params["threshold"],
        "modality": modality,
        "change_seq": head,
        "seconds": round(time.monotonic() - started, 3),
    }
