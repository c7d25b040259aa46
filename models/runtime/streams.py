"""Forward streams: how many forwards of one model run at once, and on how many threads each.

On a CPU, two forwards of half a batch each on half the cores outrun one forward of the whole
batch on all of them: each narrow forward keeps its own caches and never waits at the other
thread's barriers.

A lone request still gets every core: a forward that starts while no other runs and nothing
else waits for the model takes all the slots and runs on the model's wide thread with all the
threads, which shortens its latency. One thread does every wide forward because GNU OpenMP
throttles its spinning once more than one thread keeps a team of workers
(``models.runtime.threads.configure_torch_threads``). Under load each forward takes one slot
and ``threads // count`` threads in its batcher worker. Other work of the process counts
as load too (:func:`in_flight`): a wide forward beside another request's write or decode has
its OpenMP team wait at barriers for a thread that work has preempted. Towers that run
outside torch (int8 in ONNX Runtime) follow the same slots with a session per thread count
(``models.runtime.onnx``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from models.runtime.threads import use_torch_threads

T = TypeVar("T")

# A forward takes every core only when its unit of work has run alone for this long: under
# steady load from several clients, a forward that starts in a gap between two requests
# would otherwise spread over the cores the next request arrives to work on.
QUIET_S = 0.25

_units = 0  # units of the process's work running now (in_flight)
_crowded_at = float("-inf")  # when more than one unit last ran
_units_lock = threading.Lock()


@contextlib.contextmanager
def in_flight() -> Iterator[None]:
    """Count one unit of the process's work (an HTTP request, a job) while it runs. A forward
    takes every core only while its own unit has been the only one for ``QUIET_S``
    (:func:`crowded`).

    Why: a wide forward's OpenMP team waits at every barrier for its slowest thread, and a
    thread that shares its core with other work (another request's write, decode or answer)
    is preempted for whole scheduler slices. Measured with the batch write benchmark
    (``python -m bench --only bulk``, two clients): while one batch was written and the next
    encoded on a wide forward, the encoder spent about twice the CPU time per text it spends
    on narrow forwards (docs/performance.md)."""
    global _units, _crowded_at
    with _units_lock:
        _units += 1
        if _units > 1:
            _crowded_at = time.monotonic()
    try:
        yield
    finally:
        with _units_lock:
            if _units > 1:
                _crowded_at = time.monotonic()
            _units -= 1


def crowded() -> bool:
    """Whether more than one :func:`in_flight` unit runs now or did in the last ``QUIET_S``."""
    return _units > 1 or time.monotonic() - _crowded_at < QUIET_S


class Streams:
    """Slots for ``count`` concurrent forwards sharing ``threads`` torch threads."""

    def __init__(self, *, threads: int, count: int) -> None:
        self.threads = max(1, threads)
        self.count = max(1, min(count, self.threads))
        self._free = self.count
        self._cond = threading.Condition()
        self._wide: ThreadPoolExecutor | None = None

    @property
    def running(self) -> int:
        """Slots held now."""
        return self.count - self._free

    @property
    def narrow_threads(self) -> int:
        """Threads of a forward under load (one slot)."""
        return self.threads // self.count

    def run(self, forward: Callable[[int], T], *, alone: bool = True) -> T:
        """``forward(threads)`` in a slot, told how many threads it runs on (torch's are set
        already; a runtime with its own pools picks its session by it). ``alone``: nothing
        else waits for this model, so it may take every slot when all are free; it then
        runs on the model's wide thread with every torch thread (the one thread here that
        keeps an OpenMP team, see ``models.runtime.threads.configure_torch_threads``), unless
        other work of the process runs beside it or did a moment ago (:func:`crowded`).
        Otherwise it runs in the calling thread on ``threads // count`` threads."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            wide = alone and self._free == self.count and not crowded()
            take = self.count if wide else 1
            self._free -= take
        try:
            if take == self.count and self.threads > 1:
                return self._wide_thread().submit(forward, self.threads).result()
            threads = self.narrow_threads if take < self.count else 1
            use_torch_threads(threads)
            return forward(threads)
        finally:
            self._release(take)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Every slot: no forward runs meanwhile (a weight or runtime swap)."""
        with self._cond:
            while self._free < self.count:
                self._cond.wait()
            self._free = 0
        try:
            yield
        finally:
            self._release(self.count)

    def close(self) -> None:
        """Stop the wide thread (its OpenMP team ends with it); later wide forwards start
        another."""
        with self._cond:
            wide, self._wide = self._wide, None
        if wide is not None:
            wide.shutdown(wait=True)

    def _wide_thread(self) -> ThreadPoolExecutor:
        with self._cond:
            if self._wide is None:
                self._wide = ThreadPoolExecutor(
                    1,
                    thread_name_prefix="mmr-wide",
                    initializer=use_torch_threads,
                    initargs=(self.threads,),
                )
            return self._wide

    def _release(self, slots: int) -> None:
        with self._cond:
            self._free += slots
            self._cond.notify_all()


def default_count(device: str, threads: int) -> int:
    """``MMR_BATCH_STREAMS=0`` (auto): two forwards at once on a CPU with two or more torch
    threads; one on CUDA (the GPU serialises them anyway)."""
    return 1 if device != "cpu" or threads < 2 else 2
