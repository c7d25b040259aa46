"""The FastAPI application: ``uvicorn app.main:app`` or ``mmr serve``."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp

from app import openapi
from app.auth import Authenticate, require_api_key
from app.errors import install_error_handlers
from app.fastpath import FastPath
from app.lifespan import lifespan
from app.limits import BodySizeLimit
from app.metrics import Metrics, MetricsMiddleware
from app.routers import collections, embed, health, items, jobs, keys, models, search
from app.settings import Settings, get_settings

DESCRIPTION = """
Search images and text by each other in one vector space.

Create a collection, add items (JSON text or multipart image files), then search it by
text, by file, by a stored item or by a raw vector. When `MMR_API_KEYS` is set, every
`/v1` route needs `Authorization: Bearer <key>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for these settings (the environment's when none are given)."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper())
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
    # The app's settings live in app.state, not in a dependency override: FastAPI analyses
    # an override's signature again on every request (a third of a search's time).
    install_error_handlers(app)
    app.include_router(health.router)
    secured = [Depends(require_api_key)]
    for module in (models, collections, items, search, embed, jobs, keys):
        app.include_router(module.router, dependencies=secured)
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _serve_hot_routes_first(app)
    return app


def _serve_hot_routes_first(app: FastAPI) -> None:
    """Put the fast path (search, embed) outside FastAPI's own stack: its error, telemetry
    and body-limit layers (and ours) are skipped for the requests it answers; whatever it
    hands on goes through all of them."""
    build = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        # Keys first, in front of everything: no layer reads a body for a caller without one.
        return Authenticate(FastPath(build(), state=app.state), fastapi=app)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, so importing this module
    # (tests, tools) does not read the environment or load a model.
    if name == "app":
        return create_app()
    raise AttributeError(name)
