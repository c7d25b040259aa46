"""``auto`` indexes follow their collection's size: a check off the request path queues a
reindex job when a collection has grown into another regime, shrunk back, or (HNSW) holds
too many masked deletions (index.spec.auto_retune). The job chooses the spec again from the
size SQL holds and builds it beside the live index, which keeps answering until the swap.
"""

from __future__ import annotations

import logging
import time

from app.state import Services
from index.jobs import CANCELLED, FAILED
from index.spaces import KEPT
from index.spec import AUTO, auto_retune
from index.tables import JobRow

log = logging.getLogger(__name__)

RETUNE_EVERY_S = 2.0  # how often the API process looks at its auto indexes' sizes
# After queueing a collection's reindex, wait this long before queueing another for it
# (a failing job is not queued again every few seconds), and this long after one of them
# failed (a build that runs out of memory is not retried every minute).
RETUNE_BACKOFF_S = 60.0
RETUNE_FAILED_BACKOFF_S = 600.0


class Retuner:
    """Queues at most one reindex job per ``auto`` collection that outgrew its index."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._queued: dict[int, tuple[str, float]] = {}  # collection -> (job id, when)

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
            if reason is None or self._waiting(row.id, now):
                continue
            if any(space.state == KEPT for space in services.stores.spaces.of(row.id)):
                continue  # a migration's rollback stays possible (another job would refuse it)
            if self._failed(row.id):
                continue
            # None while a reindex, fine-tune or migration (which builds a new index anyway)
            # is queued or running, this process's or another's, or a reindex failed or was
            # cancelled lately (asked again under the lock: a cancel may land meanwhile).
            job = services.stores.jobs.create_unless_busy(
                type="reindex",
                collection_id=row.id,
                collection=row.name,
                params={"index": None, "reason": f"auto index: {reason}"},
                quiet_after=(FAILED, CANCELLED),
                quiet_s=RETUNE_FAILED_BACKOFF_S,
            )
            if job is None:
                continue
            self._queued[row.id] = (job.id, now)
            services.worker_wakeup.set()
            log.info("collection %s: queued reindex job %s (%s)", row.name, job.id, reason)
            queued.append(job)
        return queued

    def _waiting(self, collection_id: int, now: float) -> bool:
        """Whether this process queued the collection's last reindex too recently."""
        queued = self._queued.get(collection_id)
        return queued is not None and now - queued[1] < RETUNE_BACKOFF_S

    def _failed(self, collection_id: int) -> bool:
        """Whether a reindex of the collection failed, or was cancelled (an operator's say),
        less than the longer backoff ago: asked of SQL, so that no process (nor one started
        since) queues it again meanwhile."""
        return self.services.stores.jobs.ended_lately(
            collection_id=collection_id,
            type="reindex",
            statuses=(FAILED, CANCELLED),
            within_s=RETUNE_FAILED_BACKOFF_S,
        )
