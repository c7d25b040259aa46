"""``POST /v1/collections/{name}/search`` with a JSON body.

Cheap searches run in place on the event loop (IN_PLACE_WORK), the rest in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re

from pydantic import ValidationError

from app.fastpath import pool
from app.routers.body import is_json_type
from app.schemas.search import SearchRequest
from app.services.search import request_constraints, request_query, search
from app.state import Services
from index.locks import WouldBlock

# A search that compares the query with at most this many stored numbers (vectors x
# dimensions: an HNSW or IVF walk over a million vectors, a flat 10k) runs in place on the
# event loop. It takes about a millisecond, less than handing it to a thread and back
# costs on a busy small machine (0.35 ms measured on 2 cores), and it holds the loop no
# longer than a request's own Python does. Bigger scans, text queries (the encoder's
# batcher waits), filters (SQL), long lists and a network database's round trips go to
# the pool, and so does a search that finds a write holding the index or that must widen
# past its first pass (deleted or crowded segments): the loop never waits for those.
IN_PLACE_WORK = 1 << 23
IN_PLACE_K = 100  # reading and answering the hits grows with k: a long list goes to the pool


def reads(content_type: str) -> bool:
    """JSON only: a multipart query (an uploaded file) goes to the route."""
    return is_json_type(content_type)


async def answer(services: Services, matched: re.Match[str], _: str, raw: bytes) -> bytes | None:
    """The search's JSON, or None when the body does not validate (the route says why)."""
    try:
        req = SearchRequest.model_validate_json(raw)
    except ValidationError:
        return None
    name = matched.group(1)
    stores = services.stores
    run = functools.partial(
        search,
        settings=services.settings,
        collections=stores.collections,
        items=stores.items,
        indexes=services.indexes,
        models=services.models,
        name=name,
        query=request_query(req),
        constraints=request_constraints(req),
    )
    found = None
    if _in_place(services, name, req):
        # A write holds the index, or the search must widen: the pool does it all.
        with contextlib.suppress(WouldBlock):
            found = run(wait=False)
    if found is None:
        found = await asyncio.get_running_loop().run_in_executor(pool.pool(), run)
    return found.model_dump_json().encode()


def _in_place(services: Services, name: str, req: SearchRequest) -> bool:
    """Whether this search is cheap enough to run on the event loop (see IN_PLACE_WORK):
    a raw vector, no filter, a short list, the embedded database with a free connection,
    a loaded index whose first pass scans little."""
    if req.vector is None or req.filter or req.modalities or req.k + req.offset > IN_PLACE_K:
        return False
    if req.mode != "vector":  # words are searched in SQL
        return False
    if not services.stores.reads_without_waiting():
        return False
    live = services.indexes.ready(services.stores.collections.get(name))
    if live is None:
        return False
    index = live.space.index
    return index.scan_size(req.k) * index.dim <= IN_PLACE_WORK
