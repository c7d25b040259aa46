"""The threads the fast paths hand blocking work to."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

# As many at once as Starlette's thread pool runs for a route (anyio's 40): text queries and
# images wait on the encoder's batcher, which batches only what is in flight.
THREADS = 40


@functools.cache
def pool() -> ThreadPoolExecutor:
    """One pool for the process (like anyio's), whatever number of apps it builds."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix="mmr-fast")


# Decoding and packing images, which then wait for their forward in no thread: a thread per
# core (more only take turns for the GIL; 16 clients on 2 cores served ~15% more images/s
# through 2-4 decoding threads than through a thread per request).
DECODERS = min(16, max(2, os.cpu_count() or 2))


@functools.cache
def decoders() -> ThreadPoolExecutor:
    """The image decoding threads of the embed fast path."""
    return ThreadPoolExecutor(DECODERS, thread_name_prefix="mmr-decode")
