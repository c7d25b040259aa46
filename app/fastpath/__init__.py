"""The hot routes answered below FastAPI's routing: the same answers, a fraction of the cost.

Finding 10 neighbours among a million vectors costs FAISS well under a millisecond, and
embedding a small image with a small model about as much. Going through FastAPI to get
there (a dozen middleware and router layers, dependency solving, the form parser's spooled
files, the response model's validation and ``json.dumps``) cost several times that, all of
it holding the GIL that the other clients' requests wait for. This ASGI layer answers the
routes in ``ROUTES`` itself when everything about a request is in order: the key passed
(``app.auth.Authenticate`` in front of it left its principal in the scope), the service is
ready, the body is within its declared length and in a shape the route's handler
(``search.answer``, ``embed.answer``) reads exactly as the route would. It calls the same
service function with the same schema as the route, with the stores as the key sees them.

An error the service function raises is answered here with the body the route's error
handlers give it (``app.errors.describe_error``): running an image decode or a refused
(429) forward a second time would only cost more. Anything else goes on to the FastAPI
route with the body replayed: a request the handler does not vouch for (a chunked body,
bad JSON, an unusual multipart layout), and an unexpected error (a 500, logged
there). Neither search nor embed changes anything, so running one again is harmless.

It wraps the whole FastAPI stack (``app.main``), so the requests it answers skip FastAPI's
own error, telemetry and body-limit layers too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access import ROUTE
from app.auth import principal_of_scope
from app.errors import describe_error, error_body
from app.fastpath import embed, search
from app.state import Services

# (services, the path's match, the Content-Type, the body) -> the 200 answer's JSON, or
# None to hand the request to the route; raises what the service function raised.
Answer = Callable[[Services, re.Match[str], str, bytes], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Route:
    """A route the fast path may answer: its path, its template (the metrics' label), which
    bodies it reads and how it answers them."""

    path: re.Pattern[str]
    template: str
    reads: Callable[[str], bool]  # by Content-Type
    answer: Answer


ROUTES = (
    Route(
        re.compile(r"^/v1/collections/([^/]+)/search$"),
        "/v1/collections/{name}/search",
        search.reads,
        search.answer,
    ),
    Route(re.compile(r"^/v1/embed$"), "/v1/embed", embed.reads, embed.answer),
)


class FastPath:
    """ASGI middleware; ``state`` is the FastAPI app's state (settings, services, metrics)."""

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services | None = self.state.services
        route, matched = _route(scope["path"])
        principal = principal_of_scope(scope)
        if route is None or matched is None or services is None or principal is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE] = route.template  # the access log's route (app.access)
        # The stores as the key sees them: embed's `collection` is in the body.
        services = services.seen_by(principal)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        ctype = headers.get("content-type", "")
        if (
            not route.reads(ctype)
            or not declared.isdigit()
            or int(declared) > services.settings.max_upload_bytes
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        raw, receive, complete = await _read_body(receive, int(declared))
        answer: bytes | None = None
        failed: Exception | None = None
        if complete:
            try:
                answer = await route.answer(services, matched, ctype, raw)
            except Exception as exc:
                failed = exc
        if failed is not None:
            status, code, message = describe_error(failed)
            if status == 500:  # the route runs it again, logs it and answers
                await self.app(scope, receive, send)
                return
            await error_body(status, code, message)(scope, receive, send)
        elif answer is None:
            await self.app(scope, receive, send)
            return
        else:
            status = 200
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
        metrics.requests.labels("POST", route.template, str(status)).inc()
        metrics.latency.labels("POST", route.template).observe(time.perf_counter() - start)


def _route(path: str) -> tuple[Route | None, re.Match[str] | None]:
    for route in ROUTES:
        matched = route.path.match(path)
        if matched is not None:
            return route, matched
    return None, None


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
