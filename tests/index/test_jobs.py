"""The job table on SQLite and Postgres: claims, leases, heartbeats, cancels, dead workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from index.db import make_engine, make_sessionmaker, migrate
from index.errors import ConflictError, NotFoundError
from index.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore
from index.stores import Stores
from tests.factories import new_collection
from tests.postgres_gate import POSTGRES


@pytest.fixture
def jobs(database_url: str) -> Iterator[JobStore]:
    engine = make_engine(database_url)
    migrate(engine)
    yield JobStore(make_sessionmaker(engine))
    engine.dispose()


def queue(jobs: JobStore, collection_id: int = 1, kind: str = "finetune") -> str:
    return jobs.create(type=kind, collection_id=collection_id, collection="c", params={}).id


def test_a_job_runs_once_from_claim_to_finish(jobs: JobStore) -> None:
    job_id = queue(jobs)
    assert jobs.get(job_id).status == QUEUED
    claimed = jobs.claim(worker="w1", lease_s=30)
    assert claimed is not None and claimed.id == job_id
    assert (claimed.status, claimed.worker, claimed.attempts) == (RUNNING, "w1", 1)
    assert jobs.claim(worker="w2", lease_s=30) is None  # nothing else to run
    assert jobs.heartbeat(job_id, worker="w1", lease_s=30, progress={"fraction": 0.5})
    assert jobs.get(job_id).progress == {"fraction": 0.5}
    assert not jobs.heartbeat(job_id, worker="w2", lease_s=30)  # not w2's job
    assert jobs.finish(job_id, worker="w1", status=SUCCEEDED, metrics={"ok": 1})
    done = jobs.get(job_id)
    assert (done.status, done.metrics, done.lease_expires_at) == (SUCCEEDED, {"ok": 1}, None)
    assert not jobs.finish(job_id, worker="w1", status=FAILED)  # ended is ended
    with pytest.raises(NotFoundError):
        jobs.get("nope")


def test_one_job_per_collection_runs_at_a_time(jobs: JobStore) -> None:
    first, second, other = queue(jobs, 1), queue(jobs, 1), queue(jobs, 2)
    a = jobs.claim(worker="w1", lease_s=30)
    b = jobs.claim(worker="w2", lease_s=30)
    assert a is not None and b is not None
    assert (a.id, b.id) == (first, other)  # the second job of collection 1 waits
    assert jobs.claim(worker="w3", lease_s=30) is None
    jobs.finish(first, worker="w1", status=SUCCEEDED)
    c = jobs.claim(worker="w3", lease_s=30)
    assert c is not None and c.id == second


def test_concurrent_workers_never_run_one_job_twice(jobs: JobStore) -> None:
    for collection in range(12):
        queue(jobs, collection)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = jobs.claim(worker=name, lease_s=30)
            if job is None:
                if not jobs.list(status=QUEUED):
                    return
                continue
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 12 and len(set(claimed)) == 12


def test_cancel_is_immediate_and_ends_the_workers_lease(jobs: JobStore) -> None:
    queued, running = queue(jobs, 1), queue(jobs, 2)
    assert jobs.cancel(queued).status == CANCELLED
    claimed = jobs.claim(worker="w", lease_s=30)
    assert claimed is not None and claimed.id == running
    cancelled = jobs.cancel(running)
    assert cancelled.status == CANCELLED and cancelled.error == "cancelled by a client"
    assert not jobs.heartbeat(running, worker="w", lease_s=30)  # the worker learns of it
    assert not jobs.finish(running, worker="w", status=SUCCEEDED)
    assert jobs.get(running).status == CANCELLED
    with pytest.raises(ConflictError):
        jobs.cancel(running)


def test_a_dead_workers_job_is_taken_again_then_failed(jobs: JobStore) -> None:
    job_id = queue(jobs)
    for attempt in (1, 2):
        claimed = jobs.claim(worker=f"dead{attempt}", lease_s=0.05)
        assert claimed is not None and claimed.attempts == attempt
        time.sleep(0.1)  # no heartbeat: the lease runs out
        assert jobs.reap(max_attempts=2) == 1
        expected = QUEUED if attempt == 1 else FAILED
        assert jobs.get(job_id).status == expected
    failed = jobs.get(job_id)
    assert failed.error is not None and "lease ran out" in failed.error
    assert not jobs.finish(job_id, worker="dead2", status=SUCCEEDED)  # too late


def test_a_live_lease_is_not_reaped_and_release_requeues(jobs: JobStore) -> None:
    job_id = queue(jobs)
    assert jobs.claim(worker="w", lease_s=30) is not None
    assert jobs.reap(max_attempts=3) == 0
    assert jobs.release(job_id, worker="w")
    assert jobs.get(job_id).status == QUEUED
    assert [j.id for j in jobs.list(collection="c")] == [job_id]


@pytest.mark.parametrize("database_url", [POSTGRES], indirect=True)
def test_leases_and_times_are_the_databases_not_a_workers_clock(
    jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose clock runs an hour behind claims a job for 30 s: the lease is 30 s of
    the database's time, so a worker with a right clock does not take the job back at once
    (and the times a client reads are the database's)."""
    import index.jobs
    import index.tables

    real = index.tables.utcnow
    monkeypatch.setattr(index.jobs, "utcnow", lambda: real() - timedelta(hours=1))
    job_id = queue(jobs)
    claimed = jobs.claim(worker="slow", lease_s=30)
    assert claimed is not None and claimed.lease_expires_at is not None
    monkeypatch.setattr(index.jobs, "utcnow", real)
    assert jobs.reap(max_attempts=3) == 0
    assert jobs.get(job_id).status == RUNNING
    for stamp in (claimed.created_at, claimed.started_at):
        assert stamp is not None and abs((stamp - real()).total_seconds()) < 60
    assert 0 < (claimed.lease_expires_at - real()).total_seconds() <= 31
    assert jobs.finish(job_id, worker="slow", status=SUCCEEDED)
    finished = jobs.get(job_id).finished_at
    assert finished is not None and abs((finished - real()).total_seconds()) < 60


def test_processes_asking_at_once_queue_one_job_unless_busy(stores: Stores) -> None:
    """The auto index's check runs in every API process: those that find the same
    collection due at the same moment queue one job between them."""
    row = new_collection(stores)
    others = [Stores.over(stores.sessions).jobs for _ in range(6)]  # as many processes
    start = threading.Barrier(len(others))
    made: list[object] = []

    def ask(jobs: JobStore) -> None:
        start.wait()
        made.append(
            jobs.create_unless_busy(type="reindex", collection_id=row.id, collection="c", params={})
        )

    threads = [threading.Thread(target=ask, args=(jobs,)) for jobs in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([m for m in made if m is not None]) == 1
    assert len(stores.jobs.list(status=QUEUED)) == 1
