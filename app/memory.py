"""The server process's own memory beyond what requests hold (docs/reliability.md, "Hostile
input"): what the C allocator keeps after a burst, and a package nothing here runs.

Requests' bodies and decoded media are budgeted (``app.limits``, ``models.media.budget``).
What no budget covers is memory freed but kept:

- **Trim.** glibc's malloc gives threads up to eight arenas per core, each keeping the pages
  its threads freed, resident until ``malloc_trim`` gives them back. :class:`Trimmer` does
  so after start-up (the model load and the precision probe free a lot) and whenever the
  process's anonymous memory has grown by :data:`TRIM_GROWTH_MB` since it last looked, off
  the request path. (Capping the arenas at two as well, ``MALLOC_ARENA_MAX=2``, moved the
  hostile-input benchmark's peak by less than its noise once this trims: not done.)
- **Mmap threshold.** glibc serves an allocation from its arenas below ``M_MMAP_THRESHOLD``
  and maps it on its own above; by default each freed mapping raises that threshold to its
  size (up to 32 MiB). An index build's chunk buffers (8 MiB of rows a page) and FAISS's
  growing vectors did so, after which they came from the arenas, interleaved with the
  index's long-lived blocks: a server's anonymous memory grew by 40-170 MB with each
  reindex of a 100k collection, and no trim gave it back (``python -m bench.build_memory
  --reindexes``). Pinned (``MALLOC_MMAP_THRESHOLD_=4194304`` in the environment: 4 MiB,
  above an HNSW search's visited table up to 4M vectors, below a build's 8 MiB pages),
  larger blocks are mapped and unmapped whole and reindexes keep no more than the first,
  but the encoders' activations are then mapped and zeroed anew each batch: mmr-mini
  encoded 0.75-0.85x the images a second (docs/performance.md, "Memory"). The server does
  not pin it; an operator who reindexes often and encodes little may.
- **Triton.** torch's CUDA wheel brings Triton, and ``torch._dynamo`` (which torchvision
  imports) loads it: 100 MB resident of a GPU kernel compiler. The service never calls
  ``torch.compile`` (``tests/app/test_memory.py`` holds it to that), so
  :func:`keep_out_unused_packages` keeps Triton out of the process.

Off glibc (musl, macOS) the allocator calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

TRIM_GROWTH_MB = 64.0
UNUSED_PACKAGES = ("triton",)


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it."""
    name = ctypes.util.find_library("c")
    if name is None or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def keep_out_unused_packages() -> None:
    """Make ``import triton`` fail (torch then takes it as not installed), unless it is
    already imported."""
    for name in UNUSED_PACKAGES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def trim() -> bool:
    """Give the allocator's free pages back to the system; False off glibc."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


def anonymous_mb(status: Path = Path("/proc/self/status")) -> float | None:
    """This process's anonymous resident memory (RssAnon) in MB; None where unknown."""
    try:
        text = status.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return None


class Trimmer:
    """Trims when anonymous memory has grown ``growth_mb`` since the last trim (or start)."""

    def __init__(self, growth_mb: float = TRIM_GROWTH_MB) -> None:
        self.growth_mb = growth_mb
        self.level: float | None = None  # RssAnon after the last trim
        self.trims = 0

    def now(self) -> None:
        """Trim, and take what is left as the level to grow from."""
        if trim():
            self.trims += 1
        self.level = anonymous_mb()

    def check(self) -> bool:
        """Trim when memory grew past the level; whether it did."""
        current = anonymous_mb()
        if current is None:
            return False
        if self.level is None or current < self.level:
            self.level = current  # freed by itself: grow from here
            return False
        if current - self.level < self.growth_mb:
            return False
        before = current
        self.now()
        log.debug("malloc_trim: %.0f MB -> %s MB", before, self.level)
        return True
