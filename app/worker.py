"""The job runner: claims jobs with a lease, heartbeats while it works, records the outcome.

``mmr worker`` runs one in its own process; ``mmr serve`` runs one in a thread of the API
process unless ``MMR_WORKER=off``. Any number may run against one database: SQL decides who
runs what (index/jobs.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from app.services.duplicates_job import run_duplicates
from app.services.errors import ServiceError
from app.services.finetune import run_finetune, run_reindex
from app.services.jobs import JobContext
from app.services.migrate import run_migrate
from app.state import Services
from index.builds import BuildStopped
from index.errors import ConflictError, NotFoundError
from index.faults import Retrier
from index.jobs import CANCELLED, FAILED, SUCCEEDED
from models.errors import MediaError, ModelLoadError
from models.runtime.streams import in_flight
from models.runtime.threads import in_thread_with_threads
from models.training.finetune import Cancelled

log = logging.getLogger("mmr.worker")

COLLECTION_DELETED = "cancelled: its collection was deleted while the job ran"
# What a job can fail with that is about the job (its pairs, its collection), not a bug.
JOB_ERRORS = (
    ValueError,
    LookupError,
    NotFoundError,
    ConflictError,
    ServiceError,
    MediaError,
    ModelLoadError,
)


Handler = Callable[[Services, JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {
    "finetune": run_finetune,
    "reindex": run_reindex,
    "migrate": run_migrate,
    "duplicates": run_duplicates,
}


class Worker:
    """Claims and runs jobs until told to stop."""

    def __init__(self, services: Services, *, name: str | None = None) -> None:
        self.services = services
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.settings = services.settings
        self.stopping = threading.Event()

    def run_forever(self) -> None:
        """Poll for jobs until ``stop()``; a wake-up event cuts the wait short.

        An error (the database gone, most likely) never ends the loop: it retries with
        backoff, so jobs queued during an outage run once the database is back.
        """
        log.debug("worker %s polling for jobs", self.name)
        retrier = Retrier(f"worker {self.name}", cap=max(self.settings.job_poll_s, 5.0))
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # Retrier logs it, once per outage
                self.stopping.wait(retrier.failed(exc))
                continue
            retrier.succeeded()
            if not busy:
                self.services.worker_wakeup.wait(self.settings.job_poll_s)
                self.services.worker_wakeup.clear()

    def stop(self) -> None:
        """Ask the loop (and a running job) to stop."""
        self.stopping.set()
        self.services.worker_wakeup.set()

    def run_once(self) -> bool:
        """Take back jobs of dead workers, then claim and run one job; False when none."""
        jobs = self.services.stores.jobs
        jobs.reap(max_attempts=self.settings.job_max_attempts)
        job = jobs.claim(worker=self.name, lease_s=self.settings.job_lease_s, types=list(HANDLERS))
        if job is None:
            return False
        log.info("job %s (%s of %s) started", job.id, job.type, job.collection)
        ctx = JobContext(job)
        beat = threading.Thread(target=self._heartbeat, args=(ctx,), daemon=True)
        beat.start()
        try:
            status, metrics, error = self._run(ctx)
        finally:
            ctx.stop.set()
            beat.join()
        if status == CANCELLED and self.stopping.is_set():
            # Shutting down is not the client's cancel: the job goes back to the queue.
            self._record(lambda: jobs.release(job.id, worker=self.name))
            log.info("job %s put back in the queue: the worker is stopping", job.id)
            return True
        done = self._record(
            lambda: jobs.finish(
                job.id,
                worker=self.name,
                status=status,
                metrics=metrics,
                error=error,
                progress=ctx.progress,
            )
        )
        log.info(
            "job %s %s%s",
            job.id,
            status if done else "ended elsewhere",
            f": {error}" if error else "",
        )
        return True

    def _run(self, ctx: JobContext) -> tuple[str, dict[str, Any], str | None]:
        try:
            # A thread of its own with every torch thread: its OpenMP team ends with the job
            # (a lasting one would slow every forward, see models.runtime.threads).
            handler = HANDLERS[ctx.job.type]
            with in_flight():  # requests' forwards keep off the cores the job works on
                metrics = in_thread_with_threads(lambda: handler(self.services, ctx))
        except Exception as exc:
            # Whatever a job ran into once its collection was deleted (a row gone, a
            # version it cannot record), the cause is the delete: nothing is left to do.
            if self._collection_gone(ctx):
                return CANCELLED, {}, COLLECTION_DELETED
            if isinstance(exc, Cancelled) or (
                isinstance(exc, BuildStopped) and self.stopping.is_set()
            ):
                # A stopping worker's job goes back to the queue (run_once).
                return CANCELLED, {}, "cancelled"
            if isinstance(exc, JOB_ERRORS):
                return FAILED, {}, str(exc)
            # A bad job must not take the worker down with it.
            log.exception("job %s crashed", ctx.job.id)
            return FAILED, {}, f"internal error ({type(exc).__name__}): {exc}"
        ctx.report(fraction=1.0, eta_s=0.0)
        return SUCCEEDED, metrics, None

    def _collection_gone(self, ctx: JobContext) -> bool:
        """Whether the job's collection was deleted (False when SQL cannot say)."""
        try:
            self.services.stores.collections.get_by_id(ctx.job.collection_id)
        except NotFoundError:
            return True
        except Exception:  # the database away: the job's own error stands
            return False
        return False

    def _record(self, write: Callable[[], bool]) -> bool:
        """A job's outcome written to SQL, retried through an outage (a job that ran for an
        hour is not run again for a blip); False when the worker stops first (the lease
        then runs out and the job is queued again)."""
        retrier = Retrier(f"worker {self.name}: recording a job's outcome")
        while True:
            try:
                done = write()
            except Exception as exc:  # Retrier logs it, once per outage
                if self.stopping.wait(retrier.failed(exc)):
                    return False
                continue
            retrier.succeeded()
            return done

    def _heartbeat(self, ctx: JobContext) -> None:
        # Often enough for progress to look live, and well inside the lease.
        every = min(2.0, self.settings.job_lease_s / 3)
        retrier = Retrier(f"heartbeat of job {ctx.job.id}")
        while not ctx.stop.wait(every):
            if self.stopping.is_set():
                ctx.stop.set()
                return
            try:
                mine = self.services.stores.jobs.heartbeat(
                    ctx.job.id,
                    worker=self.name,
                    lease_s=self.settings.job_lease_s,
                    progress=ctx.progress,
                )
            except Exception as exc:  # a missed beat is retried at the next; never fatal
                retrier.failed(exc)
                continue
            retrier.succeeded()
            if not mine or self._collection_gone(ctx):
                # Cancelled by a client, taken back after a stall, or its collection deleted
                # (``_run`` then ends it cancelled, saying so).
                ctx.stop.set()


def start_in_process(services: Services) -> tuple[Worker, threading.Thread]:
    """A worker on a daemon thread of this process (``mmr serve`` without MMR_WORKER=off)."""
    worker = Worker(services)
    thread = threading.Thread(target=worker.run_forever, name="mmr-worker", daemon=True)
    thread.start()
    return worker, thread
