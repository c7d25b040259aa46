"""HTTP layer: routers, schemas, settings, auth, errors, lifespan, CLI.

Before anything imports torch (``mmr serve`` and ``uvicorn app.main:app`` both come through
here first), the process keeps Triton out: ``app.memory``.
"""

from app.memory import keep_out_unused_packages

keep_out_unused_packages()
