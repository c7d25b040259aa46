"""Forward streams: how many forwards of one model run at once, and on how many threads each.

On a CPU, two forwards of half a batch each on half the cores outrun one forward of the whole
batch on all of them: each narrow forward keeps its own caches and never waits at the other
thread's barriers. Measured on 2 cores (ViT-B-32, images/s, forward only): bf16 one forward on
2 threads 84-88 at batch 16, 122-131 at batch 32; two 1-thread forwards of 8 at once 116, of
16 at once 128. fp32: 27.5 at its best batch on 2 threads, 32 as two 1-thread forwards.

A lone request still gets every core: a forward that starts while no other runs and nothing
else waits for the model takes all the slots and all the threads (its latency: 35 ms instead
of 50 ms at batch 1, bf16). Under load each forward takes one slot and ``threads // count``
threads. Towers that run outside torch on a fixed thread pool (ONNX Runtime) take every slot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch


class Streams:
    """Slots for ``count`` concurrent forwards sharing ``threads`` torch threads."""

    def __init__(self, *, threads: int, count: int) -> None:
        self.threads = max(1, threads)
        self.count = max(1, min(count, self.threads))
        self._free = self.count
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        """Slots held now."""
        return self.count - self._free

    @contextlib.contextmanager
    def forward(self, *, alone: bool = True) -> Iterator[int]:
        """Hold slots for one forward; yields the torch threads it may use (already set for
        the calling thread). ``alone``: nothing else waits for this model, so the forward
        may take every slot when all are free."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            take = self.count if alone and self._free == self.count else 1
            self._free -= take
        threads = self.threads if take == self.count else self.threads // self.count
        try:
            # Per thread under OpenMP: this worker's forwards, not the other stream's.
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            yield threads
        finally:
            self._release(take)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Every slot: no forward runs meanwhile (a weight swap, a runtime with its own
        thread pool)."""
        with self._cond:
            while self._free < self.count:
                self._cond.wait()
            self._free = 0
        try:
            yield
        finally:
            self._release(self.count)

    def _release(self, slots: int) -> None:
        with self._cond:
            self._free += slots
            self._cond.notify_all()


def default_count(device: str, threads: int) -> int:
    """``MMR_BATCH_STREAMS=0`` (auto): two forwards at once on a CPU with two or more torch
    threads; one on CUDA (the GPU serialises them anyway)."""
    return 1 if device != "cpu" or threads < 2 else 2
