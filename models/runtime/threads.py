"""How many threads torch runs on, per thread: wide for forwards and training, one elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


# Torch's threads for forwards and training (MMR_TORCH_THREADS); 0 until configured.
_threads = 0


def configure_torch_threads(threads: int) -> int:
    """Set how many threads forwards and training use (0 = one per core), and run torch on
    one thread everywhere else (this thread, and threads that start torch later): returns
    the count for forwards.

    Why one elsewhere: GNU OpenMP, which torch's CPU build uses, spins its idle workers only
    while it manages no more threads than there are cores; each thread that runs torch on
    several threads keeps a team of workers for good, and past that bound every team waits
    by sleeping, which makes a lone forward markedly slower on a small machine. So only the
    model's wide-forward thread
    (``models.runtime.streams``) and a training run (in a thread of its own, see
    :func:`in_thread_with_threads`) keep teams; decoding and preprocessing run on one."""
    global _threads
    _threads = threads or os.cpu_count() or 1
    torch.set_num_threads(1)
    return _threads


def torch_threads() -> int:
    """Threads for forwards and training: the configured count, else one per core."""
    return _threads or os.cpu_count() or 1


def use_torch_threads(count: int) -> None:
    """Torch threads for the calling thread (per thread under OpenMP); nothing when already
    so (setting them also drops oneDNN's cached kernels)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def in_thread_with_threads(run: Callable[[], T], threads: int | None = None) -> T:
    """``run()`` in a new thread that uses ``threads`` torch threads (default
    :func:`torch_threads`); its OpenMP team ends with it. Returns or raises what ``run`` did."""
    count = threads or torch_threads()
    with ThreadPoolExecutor(
        1, thread_name_prefix="mmr-torch-run", initializer=use_torch_threads, initargs=(count,)
    ) as own:
        return own.submit(run).result()
