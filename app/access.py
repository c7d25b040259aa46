"""Request ids and the access log: the outermost layer of the app (``app.main``).

Every HTTP response carries ``X-Request-ID``: the client's own when it sent a sane one
(printable ASCII without spaces, at most 128 characters), else a new one. While the request
is served the id is in ``app.logs.request_id``, so every log record of the request carries
it, and so does an error body (``app.errors.error_body``). When the response has gone, one
INFO line on the ``mmr.access`` logger says the method, the route template (the path when
no route matched), the status and the time taken; for a probe that passed (``PROBES``) the
line is at DEBUG.

It sits outside everything, the fast path and the key check included, so their answers
carry the id too. Its cost is a header scan, a uuid and one log record a request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id

log = logging.getLogger("mmr.access")
# Polled by load balancers, orchestrators and Prometheus every few seconds: a probe that
# passes is logged at DEBUG (MMR_LOG_LEVEL=debug shows it), one that fails at INFO.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

HEADER = b"x-request-id"
SANE_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# The scope key where a layer that answers below FastAPI's router (app.fastpath) leaves the
# template of the route it answered; FastAPI's router leaves its route in scope["route"].
ROUTE = "mmr.route"


class AccessLog:
    """ASGI middleware: the request id on the response and in the log, one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = incoming_id(scope) or uuid.uuid4().hex
        header = (HEADER, rid.encode())
        status = 500  # what the server answers when the app raised before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            level = logging.DEBUG if status < 400 and scope["path"] in PROBES else logging.INFO
            if log.isEnabledFor(level):
                _log_access(scope, status, (time.perf_counter() - start) * 1000.0, level)
            request_id.reset(token)


def incoming_id(scope: Scope) -> str | None:
    """The client's X-Request-ID when it is one we may repeat in headers and logs."""
    for name, value in scope["headers"]:
        if name == HEADER:
            return value.decode("ascii") if SANE_ID.fullmatch(value) else None
    return None


def route_of(scope: Scope) -> str:
    """The template of the route that answered, or the path (escaped) when none did."""
    template = scope.get(ROUTE) or getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    # A path may hold anything a client percent-encodes: no line breaks into the log.
    return repr(scope["path"])[1:-1]


def _log_access(scope: Scope, status: int, duration_ms: float, level: int) -> None:
    method, route = scope["method"], route_of(scope)
    log.log(
        level,
        "%s %s %d %.1f ms",
        method,
        route,
        status,
        duration_ms,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 3),
        },
    )
