"""Micro-batching: concurrent requests to one encoder tower share forward passes.

Callers (the web server's threadpool threads) prepare their inputs (decode, preprocess,
tokenize) in their own thread, :meth:`MicroBatcher.submit` the tensor and block on a future.
A worker thread of the tower (one per stream, below) takes the oldest waiting request and
runs one forward on it together with every request queued behind it (up to ``max_batch``
rows), then hands each caller its rows. Callers that go through :meth:`MicroBatcher.run`
(or :meth:`MicroBatcher.announce` first, to prepare elsewhere and await the future: the web
server's embed fast path, whose batches are then not bounded by its threads) announce
themselves while they prepare their inputs; the worker waits for announced callers
(at most ``max_wait_ms`` after the oldest request arrived or the worker was free, whichever
is later) rather than starting a forward without them. A lone request therefore never waits,
and under load a forward takes everyone whose inputs were being prepared, instead of a small
batch racing the preparation of the next one for the same cores.

The queue is bounded in rows: a request that would push it past ``max_queue`` is refused with
:class:`Overloaded` (HTTP 429) at once, instead of waiting for a timeout. A request larger
than ``max_batch`` is run alone, in chunks of ``max_batch``, and is never refused for its size
when the queue is empty.

With ``streams`` above one, that many worker threads take batches: the idle ones split what
waits between them (two forwards of eight rather than one of sixteen, see
``models.runtime.streams``); a worker that frees up beside a running forward waits (same bound)
for as many rows as that forward has, and none takes more than an even part of all rows waiting
and running, so the streams settle on equal batches. Each forward is told whether it runs
``alone`` (nothing else queued or being prepared), so the model may give a lone request every
core.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from models.errors import Overloaded


class Forward(Protocol):
    """A tower's forward on prepared rows; ``alone``: no other batch waits for the tower."""

    def __call__(self, batch: torch.Tensor, /, *, alone: bool) -> np.ndarray: ...


@dataclass(frozen=True)
class BatchConfig:
    """How a tower's requests are gathered (MMR_BATCH_SIZE, _WAIT_MS, _QUEUE, _STREAMS).

    ``streams``: forwards of the tower that may run at once; 0 = the model decides
    (``models.runtime.streams.default_count``), a batcher given 0 runs one."""

    max_batch: int = 32
    max_wait_ms: float = 20.0
    max_queue: int = 512
    streams: int = 0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_ms < 0 or self.streams < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms and streams >= 0")


class Pending:
    """An announced caller of a :class:`MicroBatcher` (``announce``): it enqueues its
    prepared inputs once, or withdraws (its preparation failed)."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._open = True

    def enqueue(self, batch: torch.Tensor) -> Future[np.ndarray]:
        """Queue the prepared rows (see :meth:`MicroBatcher.enqueue`); ends the announcement,
        also when it raises."""
        with self._batcher._cond:  # reentrant: enqueue takes it again
            if not self._open:
                raise RuntimeError("this announcement was already enqueued or withdrawn")
            self._open = False
            return self._batcher.enqueue(batch, announced=True)

    def withdraw(self) -> None:
        """No inputs will come (idempotent, and nothing once enqueued): from any thread."""
        with self._batcher._cond:
            if self._open:
                self._open = False
                self._batcher._withdraw()


@dataclass
class _Request:
    batch: torch.Tensor
    arrived: float
    future: Future[np.ndarray] = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return len(self.batch)


class MicroBatcher:
    """One tower's request queue and the daemon thread that runs its forwards."""

    def __init__(self, forward: Forward, *, name: str, config: BatchConfig | None = None) -> None:
        self.name = name
        self.config = config or BatchConfig()
        self._forward = forward
        self._queue: deque[_Request] = deque()
        self._waiting = 0  # rows queued, not yet taken by the worker
        self._incoming = 0  # announced callers (run(), announce()) still preparing inputs
        self._running: list[int] = []  # rows of each forward running now
        self._closed = False
        self._cond = threading.Condition()
        self._workers = [
            threading.Thread(target=self._work, name=f"mmr-batch-{name}-{i}", daemon=True)
            for i in range(max(1, self.config.streams))
        ]
        for worker in self._workers:
            worker.start()

    @property
    def waiting_rows(self) -> int:
        """Rows queued and not yet in a forward."""
        return self._waiting

    @property
    def busy(self) -> bool:
        """Whether a forward is running now."""
        return bool(self._running)

    @property
    def alive(self) -> bool:
        """Whether every worker thread runs."""
        return all(worker.is_alive() for worker in self._workers)

    def run(self, prepare: Callable[[], torch.Tensor]) -> np.ndarray:
        """Prepare inputs in this thread (the worker knows they are on the way), then submit
        them: the forward's rows for them."""
        pending = self.announce()
        try:
            batch = prepare()
        except BaseException:
            pending.withdraw()
            raise
        return pending.enqueue(batch).result()

    def announce(self) -> Pending:
        """Tell the worker that a caller is preparing inputs: it waits for them (within
        ``max_wait_ms``) until the returned handle enqueues them or withdraws."""
        with self._cond:
            self._incoming += 1
        return Pending(self)

    def submit(self, batch: torch.Tensor) -> np.ndarray:
        """The forward's (n, dim) float32 rows for these n input rows; blocks until done."""
        return self.enqueue(batch).result()

    def enqueue(self, batch: torch.Tensor, *, announced: bool = False) -> Future[np.ndarray]:
        """Queue these n input rows: the future of the forward's (n, dim) float32 rows.
        Raises :class:`Overloaded` when the queue is full. A future cancelled before its
        forward starts is dropped from the batch."""
        request = _Request(batch, time.monotonic())
        with self._cond:
            if announced:
                self._withdraw()
            if len(batch) == 0:
                raise ValueError("an empty batch has no rows to encode")
            if self._closed:
                raise RuntimeError(f"the {self.name} encoder is closed (the server shuts down)")
            # An empty queue takes any request: a big one is chunked, never refused for size.
            if self._waiting and self._waiting + request.rows > self.config.max_queue:
                raise Overloaded(
                    f"the {self.name} encoder has {self._waiting} inputs waiting, the limit is "
                    f"{self.config.max_queue}; retry in a second, or raise MMR_BATCH_QUEUE"
                )
            self._queue.append(request)
            self._waiting += request.rows
            self._cond.notify()
        return request.future

    def _withdraw(self) -> None:
        """One announced caller is no longer on the way (holding the condition)."""
        self._incoming -= 1
        self._cond.notify()

    def close(self, timeout: float | None = 30.0) -> None:
        """Run what is queued, then stop the worker threads and join them (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            self._run(*taken)

    def _take(self) -> tuple[list[_Request], bool] | None:
        """The next batch of whole requests and whether it runs alone (None once closed and
        drained)."""
        limit = self.config.max_batch
        free_since = time.monotonic()
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                # Waiting for company never holds a request more than max_wait_ms past the
                # moment a worker was free to take it.
                wait = self.config.max_wait_ms / 1000
                deadline = max(self._queue[0].arrived, free_since) + wait
                while self._queue and self._waiting < limit and self._worth_waiting():
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
                if not self._queue:  # another worker took it meanwhile
                    continue
                taken = [self._queue.popleft()]
                rows = taken[0].rows
                share = self._share()
                while self._queue and rows + self._queue[0].rows <= share:
                    rows += self._queue[0].rows
                    taken.append(self._queue.popleft())
                self._waiting -= rows
                # From here on a future cannot be cancelled; those cancelled already (a
                # caller that stopped waiting) get no forward.
                taken = [r for r in taken if r.future.set_running_or_notify_cancel()]
                if taken:
                    break
            rows = sum(r.rows for r in taken)
            alone = not self._queue and not self._incoming and not self._running
            self._running.append(rows)
            if self._queue:
                self._cond.notify()  # an idle worker takes the rest
        return taken, alone

    def _worth_waiting(self) -> bool:
        """Whether a free worker should wait before its forward: callers are still preparing
        inputs, or another forward runs with more rows than wait here (a forward as large as
        the one running is worth a short wait while the cores are busy anyway; starting a
        small one at once would keep the streams' batches small)."""
        return bool(self._incoming) or self._waiting < max(self._running, default=0)

    def _share(self) -> int:
        """Most rows the next forward takes: the idle workers split what waits, and no forward
        takes more than an even part of everything waiting and running (two forwards of
        eight, not one of fifteen beside one of one)."""
        idle = len(self._workers) - len(self._running)
        even = -(-(self._waiting + sum(self._running)) // len(self._workers))
        return min(self.config.max_batch, -(-self._waiting // idle), max(even, *self._running, 1))

    def _run(self, taken: list[_Request], alone: bool) -> None:
        try:
            out = self._forward_chunked(torch.cat([r.batch for r in taken]), alone)
        except Exception as exc:  # a forward's error belongs to its callers, not the worker
            for request in taken:
                request.future.set_exception(exc)
        else:
            start = 0
            for request in taken:
                request.future.set_result(out[start : start + request.rows])
                start += request.rows
        finally:
            with self._cond:
                self._running.remove(sum(r.rows for r in taken))
                self._cond.notify_all()  # a worker waiting for company re-weighs

    def _forward_chunked(self, batch: torch.Tensor, alone: bool) -> np.ndarray:
        step = self.config.max_batch
        parts = [
            self._forward(batch[i : i + step], alone=alone) for i in range(0, len(batch), step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
