"""``auto`` indexes follow their collection's size: a check off the request path queues a
reindex job when a collection has grown into another regime, shrunk back, or (HNSW) holds
too many masked deletions (index.spec.auto_retune). The job chooses the spec again from the
size SQL holds and builds it beside the live index, which keeps answering until the swap.
"""

from __future__ import annotations

import logging
import time

from app.state import Services
from index.spec import AUTO, auto_retune
from index.tables import JobRow

log = logging.getLogger(__name__)

RETUNE_EVERY_S = 2.0  # how often the API process looks at its auto indexes' sizes
# After queueing a collection's reindex, wait this long before queueing another for it
# (a failing job is not queued again every few seconds).
RETUNE_BACKOFF_S = 60.0


class Retuner:
    """Queues at most one reindex job per ``auto`` collection that outgrew its index."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._queued_at: dict[int, float] = {}

    def check(self) -> list[JobRow]:
        """Queue the reindex jobs due now; the jobs queued. Reads each live index's counts
        in memory; asks SQL for jobs only of a collection due for one."""
        services = self.services
        if not services.indexes.follow:
            return []  # a process that holds no indexes (a worker) has nothing to look at
        queued = []
        now = time.monotonic()
        for row in services.stores.collections.list():
            if row.index_type != AUTO:
                continue
            live = services.indexes.ready(row)  # None while a swap is pending
            if live is None:
                continue
            index = live.space.index
            reason = auto_retune(
                index.spec, vectors=index.vectors, deleted=index.deleted, dim=row.dim
            )
            if reason is None or now - self._queued_at.get(row.id, -RETUNE_BACKOFF_S) < (
                RETUNE_BACKOFF_S
            ):
                continue
            jobs = services.stores.jobs
            if jobs.unfinished(collection_id=row.id) is not None:
                continue  # a reindex, fine-tune or migration builds a new index anyway
            job = jobs.create(
                type="reindex",
                collection_id=row.id,
                collection=row.name,
                params={"index": None, "reason": f"auto index: {reason}"},
            )
            self._queued_at[row.id] = now
            services.worker_wakeup.set()
            log.info("collection %s: queued reindex job %s (%s)", row.name, job.id, reason)
            queued.append(job)
        return queued
