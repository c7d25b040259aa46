"""HTTP layer: routers, schemas, settings, auth, errors, lifespan, CLI.

Before anything imports torch (``mmr serve`` and ``uvicorn app.main:app`` both come through
here first), the process keeps Triton out and pins the allocator's mmap threshold before
anything large is allocated: ``app.memory``.
"""

from app.memory import fix_mmap_threshold, keep_out_unused_packages

keep_out_unused_packages()
fix_mmap_threshold()
