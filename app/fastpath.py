"""JSON searches served below FastAPI's routing: the same answers, a fraction of the cost.

Finding 10 neighbours among a million vectors costs FAISS well under a millisecond. Going
through FastAPI to get there (a dozen middleware and router layers, dependency solving,
the thread hop) cost several times that, all of it holding the GIL that the searches of
other clients wait for. This ASGI layer answers ``POST /v1/collections/{name}/search`` with
a JSON body itself when everything about it is in order: auth passes, the service is
ready, the body is within its declared length and validates, the search succeeds. It
calls the same service function with the same schema as the route.

Anything else goes on to the FastAPI route with the body replayed: multipart queries,
a missing key, bad JSON, an unknown collection, a space mismatch, any error at all. So every
error answer comes from the route and its handlers, in one place; a search changes
nothing, so running it again there is harmless.

It wraps the whole FastAPI stack (``app.main``), so the searches it answers skip FastAPI's
own error, telemetry and body-limit layers too; cheap ones run in place (IN_PLACE_WORK).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import key_problem
from app.routers.body import is_json_type
from app.schemas import SearchRequest
from app.services.search import request_constraints, request_query, search
from app.state import Services
from index.locks import WouldBlock

SEARCH_PATH = re.compile(r"^/v1/collections/([^/]+)/search$")
ROUTE = "/v1/collections/{name}/search"  # the route's template: the metrics' label
# As many searches at once as Starlette's thread pool runs for the route (anyio's 40):
# text queries wait on the encoder's batcher, which batches only what is in flight.
THREADS = 40
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


class SearchFastPath:
    """ASGI middleware; ``state`` is the FastAPI app's state (settings, services, metrics)."""

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        matched = SEARCH_PATH.match(scope["path"])
        services: Services | None = self.state.services
        if matched is None or services is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if (
            not is_json_type(headers.get("content-type", ""))
            or not declared.isdigit()
            or int(declared) > services.settings.max_upload_bytes
            or key_problem(services.settings.keys, headers) is not None
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        raw, receive, complete = await _read_body(receive, int(declared))
        answer = await self._answer(services, matched.group(1), raw) if complete else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        metrics = self.state.metrics
        metrics.requests.labels("POST", ROUTE, "200").inc()
        metrics.latency.labels("POST", ROUTE).observe(time.perf_counter() - start)

    async def _answer(self, services: Services, name: str, raw: bytes) -> bytes | None:
        """The response body, or None when the route should answer instead."""
        try:
            req = SearchRequest.model_validate_json(raw)
        except ValidationError:
            return None
        run = functools.partial(
            search,
            services=services,
            name=name,
            query=request_query(req),
            constraints=request_constraints(req),
        )
        try:
            found = None
            if _in_place(services, name, req):
                # A write holds the index, or the search must widen: the pool does it all.
                with contextlib.suppress(WouldBlock):
                    found = run(wait=False)
            if found is None:
                found = await asyncio.get_running_loop().run_in_executor(_pool(), run)
        except Exception:  # the route runs it again and answers with its error handlers
            return None
        return found.model_dump_json().encode()


def _in_place(services: Services, name: str, req: SearchRequest) -> bool:
    """Whether this search is cheap enough to run on the event loop (see IN_PLACE_WORK):
    a raw vector, no filter, a short list, the embedded database with a free connection,
    a loaded index whose first pass scans little."""
    if req.vector is None or req.filter or req.modalities or req.k > IN_PLACE_K:
        return False
    if not services.store.reads_without_waiting():
        return False
    live = services.indexes.ready(services.store.get_collection(name))
    if live is None:
        return False
    index = live.space.index
    return index.scan_size(req.k) * index.dim <= IN_PLACE_WORK


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """One pool for the process (like anyio's), whatever number of apps it builds."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix="mmr-search")


async def _read_body(receive: Receive, length: int) -> tuple[bytes, Receive, bool]:
    """The body, a receive that hands it over again first, and whether it all arrived
    within its declared length."""
    chunks: list[bytes] = []
    received = 0
    more = True  # the client has more body to send
    pending: Message | None = None
    while more and received <= length:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: the route sees it too
            pending = message
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        received += len(chunk)
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    complete = pending is None and not more and received <= length
    return raw, _replay(raw, receive, pending, more=more or pending is not None), complete


def _replay(raw: bytes, receive: Receive, pending: Message | None, *, more: bool) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": more}
        if pending is not None:
            return pending
        return await receive()

    return again
