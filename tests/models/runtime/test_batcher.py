"""The micro-batcher: concurrent requests share forwards, bounded, and errors reach callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from models.encoders.registry import load_model
from models.errors import Overloaded
from models.runtime.batcher import BatchConfig, MicroBatcher

DIM = 4


class FakeTower:
    """A deterministic 'model': each row's features depend on that row only; records batches."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self.alone: list[bool] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: float | None = None

    def __call__(self, batch: torch.Tensor, *, alone: bool = True) -> np.ndarray:
        self.gate.wait(10)
        self.sizes.append(len(batch))
        self.alone.append(alone)
        time.sleep(self.delay_s)
        if self.fail_on is not None and bool((batch == self.fail_on).any()):
            raise ValueError("bad row")
        return raw(batch)


def raw(batch: torch.Tensor) -> np.ndarray:
    """The unbatched answer: row i -> [x, 2x, x^2, 1] of its first value."""
    x = batch[:, 0].double()
    return torch.stack([x, 2 * x, x * x, torch.ones_like(x)], dim=1).float().numpy()


def rows(start: int, n: int) -> torch.Tensor:
    """n input rows with distinct values."""
    return torch.arange(start, start + n, dtype=torch.float32).reshape(n, 1).repeat(1, 3)


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., tuple[MicroBatcher, FakeTower]]]:
    made: list[MicroBatcher] = []

    def build(**config: float) -> tuple[MicroBatcher, FakeTower]:
        tower = FakeTower()
        batcher = MicroBatcher(tower, name="fake", config=BatchConfig(**config))  # type: ignore[arg-type]
        made.append(batcher)
        return batcher, tower

    yield build
    for batcher in made:
        batcher.close()


def submit_together(batcher: MicroBatcher, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    start = threading.Barrier(len(inputs))

    def one(batch: torch.Tensor) -> np.ndarray:
        start.wait()
        return batcher.submit(batch)

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        return list(pool.map(one, inputs))


def test_concurrent_requests_share_forwards_and_get_their_own_rows(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=20.0, max_queue=512)
    inputs = [rows(10 * i, 1 + i % 3) for i in range(16)]
    results = submit_together(batcher, inputs)
    assert len(tower.sizes) < 16
    assert sum(tower.sizes) == sum(len(b) for b in inputs)
    for batch, got in zip(inputs, results, strict=True):
        assert got.dtype == np.float32 and got.shape == (len(batch), DIM)
        np.testing.assert_allclose(got, raw(batch))


def test_no_forward_is_larger_than_max_batch(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=8, max_wait_ms=20.0, max_queue=512)
    inputs = [rows(10 * i, 3) for i in range(16)]
    results = submit_together(batcher, inputs)
    assert max(tower.sizes) <= 8
    for batch, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, raw(batch))


def test_a_request_larger_than_max_batch_runs_in_chunks(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=8, max_wait_ms=1.0, max_queue=512)
    batch = rows(0, 20)
    np.testing.assert_allclose(batcher.submit(batch), raw(batch))
    assert tower.sizes == [8, 8, 4]


def test_a_full_queue_refuses_at_once_and_keeps_what_it_accepted(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=4, max_wait_ms=1.0, max_queue=6)
    tower.gate.clear()  # the worker is stuck in its first forward
    with ThreadPoolExecutor(max_workers=8) as pool:
        busy = pool.submit(batcher.submit, rows(100, 1))
        while not batcher.busy:
            time.sleep(0.001)
        accepted = [pool.submit(batcher.submit, rows(10 * i, 2)) for i in range(3)]
        while batcher.waiting_rows < 6:
            time.sleep(0.001)
        began = time.perf_counter()
        with pytest.raises(Overloaded, match="MMR_BATCH_QUEUE"):
            batcher.submit(rows(500, 1))
        assert time.perf_counter() - began < 0.1
        tower.gate.set()
        np.testing.assert_allclose(busy.result(5), raw(rows(100, 1)))
        for i, future in enumerate(accepted):
            np.testing.assert_allclose(future.result(5), raw(rows(10 * i, 2)))


def test_a_forward_error_reaches_every_caller_of_its_batch_and_the_worker_goes_on(
    make_batcher,
) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=1.0, max_queue=512)
    tower.fail_on = 30.0
    tower.gate.clear()  # the worker is held in a first forward while the others queue
    inputs = [rows(10 * i, 2) for i in range(6)]  # the request holding 30 poisons its batch

    def one(batch: torch.Tensor) -> BaseException | np.ndarray:
        try:
            return batcher.submit(batch)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(inputs) + 1) as pool:
        first = pool.submit(one, rows(100, 1))
        while not batcher.busy:
            time.sleep(0.001)
        queued = [pool.submit(one, batch) for batch in inputs]
        while batcher.waiting_rows < 2 * len(inputs):
            time.sleep(0.001)
        tower.gate.set()
        np.testing.assert_allclose(first.result(5), raw(rows(100, 1)))
        outcomes = [future.result(5) for future in queued]
    assert tower.sizes == [1, 2 * len(inputs)]  # all six shared the failing forward ...
    assert all(isinstance(o, ValueError) for o in outcomes)  # ... and every caller heard
    tower.fail_on = None
    np.testing.assert_allclose(batcher.submit(rows(0, 2)), raw(rows(0, 2)))


def test_close_joins_the_worker_and_later_submits_are_refused(make_batcher) -> None:
    batcher, _ = make_batcher()
    np.testing.assert_allclose(batcher.submit(rows(0, 1)), raw(rows(0, 1)))
    batcher.close()
    assert not batcher.alive
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(rows(0, 1))
    batcher.close()  # twice is harmless


def test_encoders_through_the_batcher_match_the_direct_forward() -> None:
    encoder = load_model("random:mmr-tiny", device="cpu").encoder
    texts = [f"caption number {i}" for i in range(12)]
    direct = encoder.forward("text", encoder.prepare_texts(texts))
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            got = list(pool.map(lambda t: encoder.encode_texts([t]), texts))
        np.testing.assert_allclose(np.concatenate(got), direct, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(encoder.encode_texts(texts), direct, rtol=1e-4, atol=1e-5)
        assert encoder.encode_texts([]).shape == (0, encoder.dim)
    finally:
        encoder.close()


def test_a_lone_request_never_waits_for_company(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=2000.0, max_queue=512)
    tower.delay_s = 0.0
    started = time.monotonic()
    np.testing.assert_allclose(batcher.run(lambda: rows(0, 2)), raw(rows(0, 2)))
    assert time.monotonic() - started < 1.0  # nobody was preparing: no 2-second wait


def test_callers_still_preparing_join_the_same_forward(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=5000.0, max_queue=512)
    start = threading.Barrier(6)

    def one(i: int) -> np.ndarray:
        def prepare() -> torch.Tensor:
            start.wait()  # all six announce themselves, then prepare at their own pace
            time.sleep(0.05 * i)
            return rows(10 * i, 1)

        return batcher.run(prepare)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(one, range(6)))
    assert tower.sizes == [6]  # the first one waited for the five still preparing
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, raw(rows(10 * i, 1)))


def test_a_failed_preparation_is_not_waited_for(make_batcher) -> None:
    batcher, _ = make_batcher(max_batch=64, max_wait_ms=5000.0, max_queue=512)

    def broken() -> torch.Tensor:
        raise ValueError("cannot decode")

    with pytest.raises(ValueError, match="decode"):
        batcher.run(broken)
    started = time.monotonic()
    batcher.run(lambda: rows(0, 1))
    assert time.monotonic() - started < 1.0


def test_announced_inputs_prepared_in_one_thread_share_a_forward(make_batcher) -> None:
    """announce() then enqueue(): the callers' futures, no thread waiting on any of them; one
    thread prepares every input in turn and the forward takes them together."""
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=5000.0, max_queue=512)
    pending = [batcher.announce() for _ in range(5)]
    futures = []
    for i, handle in enumerate(pending):
        time.sleep(0.02)
        futures.append(handle.enqueue(rows(10 * i, 1 + i % 2)))
    for i, future in enumerate(futures):
        np.testing.assert_allclose(future.result(5), raw(rows(10 * i, 1 + i % 2)))
    assert tower.sizes == [7]


def test_a_withdrawn_announcement_is_not_waited_for_and_ends_once(make_batcher) -> None:
    batcher, _ = make_batcher(max_batch=64, max_wait_ms=5000.0, max_queue=512)
    handle = batcher.announce()
    handle.withdraw()
    handle.withdraw()  # idempotent: the count goes down once
    started = time.monotonic()
    batcher.submit(rows(0, 1))
    assert time.monotonic() - started < 1.0
    with pytest.raises(RuntimeError, match="already"):
        handle.enqueue(rows(0, 1))
    queued = batcher.announce()
    queued.enqueue(rows(0, 1)).result(5)
    queued.withdraw()  # after enqueue: nothing
    started = time.monotonic()
    batcher.submit(rows(0, 1))
    assert time.monotonic() - started < 1.0


def test_a_cancelled_future_gets_no_forward_and_the_worker_goes_on(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=1.0, max_queue=512)
    tower.gate.clear()  # the first forward waits: the next two queue behind it
    first = batcher.enqueue(rows(0, 1))
    while not batcher.busy:
        time.sleep(0.005)
    dropped = batcher.enqueue(rows(10, 2))
    kept = batcher.enqueue(rows(20, 3))
    assert dropped.cancel()
    tower.gate.set()
    np.testing.assert_allclose(first.result(5), raw(rows(0, 1)))
    np.testing.assert_allclose(kept.result(5), raw(rows(20, 3)))
    assert tower.sizes == [1, 3] and batcher.waiting_rows == 0
    np.testing.assert_allclose(batcher.submit(rows(30, 1)), raw(rows(30, 1)))


def test_streams_run_forwards_at_once(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=1.0, max_queue=512, streams=2)
    both = threading.Barrier(2, timeout=5)
    inner = FakeTower.__call__

    def meet(self: FakeTower, batch: torch.Tensor, *, alone: bool = True) -> np.ndarray:
        both.wait()  # one stream would never get here twice at once: BrokenBarrierError
        return inner(self, batch, alone=alone)

    tower.__class__ = type("MeetingTower", (FakeTower,), {"__call__": meet})
    results = submit_together(batcher, [rows(0, 1), rows(10, 1)])
    assert sorted(tower.sizes) == [1, 1]
    np.testing.assert_allclose(results[0], raw(rows(0, 1)))
    np.testing.assert_allclose(results[1], raw(rows(10, 1)))


def test_idle_streams_split_what_waits_and_know_they_are_not_alone(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=5000.0, max_queue=512, streams=2)
    start = threading.Barrier(16)

    def one(i: int) -> np.ndarray:
        def prepare() -> torch.Tensor:
            start.wait()  # all sixteen announce themselves before any submits
            return rows(10 * i, 1)

        return batcher.run(prepare)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(16)))
    assert sorted(tower.sizes) == [8, 8]  # two forwards of eight, not one of sixteen
    assert tower.alone == [False, False]
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, raw(rows(10 * i, 1)))


def test_a_lone_request_runs_alone(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=1.0, max_queue=512, streams=2)
    batcher.run(lambda: rows(0, 3))
    assert tower.alone == [True]


def test_one_stream_never_runs_two_forwards_at_once(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=1, max_wait_ms=1.0, max_queue=512)
    running, most = [0], [0]
    lock = threading.Lock()
    inner = FakeTower.__call__

    def count(self: FakeTower, batch: torch.Tensor, *, alone: bool = True) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return inner(self, batch, alone=alone)
        finally:
            with lock:
                running[0] -= 1

    tower.__class__ = type("CountingTower", (FakeTower,), {"__call__": count})
    submit_together(batcher, [rows(10 * i, 1) for i in range(6)])
    assert len(tower.sizes) == 6 and most[0] == 1


def _eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_a_free_stream_waits_for_as_many_rows_as_the_running_forward(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=3000.0, max_queue=512, streams=2)
    tower.gate.clear()  # forwards block until the gate opens
    with ThreadPoolExecutor(16) as pool:
        running = pool.submit(batcher.submit, rows(0, 8))
        assert _eventually(lambda: batcher.busy and batcher.waiting_rows == 0)
        later = [pool.submit(batcher.submit, rows(100, 1))]
        time.sleep(0.3)
        assert batcher.waiting_rows == 1  # one row does not start a forward beside eight
        later += [pool.submit(batcher.submit, rows(101 + i, 1)) for i in range(7)]
        assert _eventually(lambda: batcher.waiting_rows == 0)  # eight do
        tower.gate.set()
        np.testing.assert_allclose(running.result(5), raw(rows(0, 8)))
        for i, done in enumerate(later):
            np.testing.assert_allclose(done.result(5), raw(rows(100 + i, 1)))
    assert sorted(tower.sizes) == [8, 8]


def test_the_wait_for_company_is_bounded(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=50.0, max_queue=512, streams=2)
    tower.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(batcher.submit, rows(0, 8))
        assert _eventually(lambda: batcher.busy and batcher.waiting_rows == 0)
        lone = pool.submit(batcher.submit, rows(100, 1))
        assert _eventually(lambda: batcher.waiting_rows == 0, timeout_s=1.0)
        tower.gate.set()
        running.result(5)
        lone.result(5)
    assert sorted(tower.sizes) == [1, 8]


def test_no_forward_takes_more_than_an_even_part_of_the_load(make_batcher) -> None:
    batcher, tower = make_batcher(max_batch=64, max_wait_ms=3000.0, max_queue=512, streams=2)
    tower.gate.clear()
    start = threading.Barrier(15)

    def one(i: int) -> np.ndarray:
        def prepare() -> torch.Tensor:
            start.wait()  # fifteen announce themselves while one row runs
            return rows(100 + i, 1)

        return batcher.run(prepare)

    with ThreadPoolExecutor(16) as pool:
        running = pool.submit(batcher.submit, rows(0, 1))
        assert _eventually(lambda: batcher.busy and batcher.waiting_rows == 0)
        later = [pool.submit(one, i) for i in range(15)]
        # Eight of the fifteen beside the running one; seven wait for the next free stream.
        assert _eventually(lambda: batcher.waiting_rows == 7)
        time.sleep(0.1)
        assert batcher.waiting_rows == 7
        tower.gate.set()
        running.result(5)
        for i, done in enumerate(later):
            np.testing.assert_allclose(done.result(5), raw(rows(100 + i, 1)))
    assert sorted(tower.sizes[:2]) == [1, 8] and sum(tower.sizes) == 16
