"""The FastAPI application: ``uvicorn app.main:app`` or ``mmr serve``."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import openapi, ui
from app.access import AccessLog
from app.auth import (
    Authenticate,
    RouteTemplate,
    match_route,
    require_api_key,
    route_templates,
)
from app.errors import install_error_handlers
from app.fastpath import FastPath
from app.lifespan import lifespan
from app.limits import BODY_WAIT_S, BodySizeLimit
from app.logs import configure_logging
from app.metrics import Metrics, MetricsMiddleware
from app.routers import (
    collections,
    duplicates,
    embed,
    health,
    items,
    jobs,
    keys,
    models,
    search,
)
from app.settings import Settings, get_settings
from models.media.budget import DecodeBudget
from models.runtime.streams import in_flight

DESCRIPTION = """
Search images and text by each other in one vector space.

Create a collection, add items (JSON text or multipart image files), then search it by
text, by file, by a stored item or by a raw vector. When `MMR_API_KEYS` is set, every
`/v1` route needs `Authorization: Bearer <key>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for these settings (the environment's when none are given)."""
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    app = FastAPI(
        title="mmr: multimodal retrieval",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by app.openapi from an installed package: the CDN's pages are blank offline.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.services = None
    app.state.metrics = Metrics()
    # Bytes of request bodies in flight, one budget for the whole process (app.limits).
    app.state.bodies = DecodeBudget(
        settings.max_bodies_bytes, wait_s=BODY_WAIT_S, setting="MMR_MAX_BODIES_MB"
    )
    # The app's settings live in app.state, not in a dependency override: FastAPI analyses
    # an override's signature again on every request (a third of a search's time).
    install_error_handlers(app)
    app.include_router(health.router)
    secured = [Depends(require_api_key)]
    for module in (models, collections, items, search, duplicates, embed, jobs, keys):
        app.include_router(module.router, dependencies=secured)
    openapi.install(app)
    ui.install(app)
    # Answers, in place, a body refused while a route reads it (the outer one counts them).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, budget=app.state.bodies)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _serve_hot_routes_first(app)
    return app


def _serve_hot_routes_first(app: FastAPI) -> None:
    """Put the fast path (search, embed) outside FastAPI's own stack: its error, telemetry
    and body-limit layers (and ours) are skipped for the requests it answers; whatever it
    hands on goes through all of them. The bodies' budget and cap hold for both: the body
    limit in front of the fast path reserves and counts every body."""
    build = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        limited = BodySizeLimit(
            FastPath(build(), state=app.state),
            max_bytes=app.state.settings.max_upload_bytes,
            budget=app.state.bodies,
            on_refusal=_count_refusal(app),
        )
        # Keys first, in front of everything: no layer reads a body for a caller without one.
        # A request with a key counts as work in flight from then on (it reads nothing).
        # Around it all, the request id and the access line: every answer carries the id.
        return AccessLog(Authenticate(CountInFlight(limited), fastapi=app))

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


class CountInFlight:
    """Each HTTP request that brings work (any method but GET, HEAD and OPTIONS: uploads,
    searches, embeddings, writes, jobs) is a unit of the process's work while it is served
    (``models.runtime.streams.in_flight``): a forward takes every core only while its own
    request is the only one, so it never spreads over a core another request works on. Reads
    (a job's progress polled every 50 ms, health checks, metrics scrapes) take too little to
    count: counting them kept a migration's forwards on one core while a client watched it
    (docs/performance.md, Bulk writes)."""

    LIGHT = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in self.LIGHT:
            await self.app(scope, receive, send)
            return
        with in_flight():
            await self.app(scope, receive, send)


def _count_refusal(app: FastAPI) -> Callable[[Scope, int], None]:
    """Count a body refused in front of the fast path as the metrics layer counts answers:
    by route template (bounded label values)."""
    routes: list[RouteTemplate] = []

    def count(scope: Scope, status: int) -> None:
        if not routes:
            routes.extend(route_templates(app))  # all routes are added by the first request
        template = match_route(scope, routes)[0] or "unmatched"
        app.state.metrics.requests.labels(scope["method"], template, str(status)).inc()

    return count


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, so importing this module
    # (tests, tools) does not read the environment or load a model.
    if name == "app":
        return create_app()
    raise AttributeError(name)
