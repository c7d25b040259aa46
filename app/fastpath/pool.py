"""The threads the fast paths hand blocking work to."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

# As many at once as Starlette's thread pool runs for a route (anyio's 40): text queries and
# images wait on the encoder's batcher, which batches only what is in flight.
THREADS = 40


@functools.cache
def pool() -> ThreadPoolExecutor:
    """One pool for the process (like anyio's), whatever number of apps it builds."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix="mmr-fast")
