"""Health, readiness and metrics (open even when API keys are set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from app.routers.models import model_info
from app.state import Services
from index.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "model, database or indexes not ready"}},
)
def readyz(request: Request) -> JSONResponse:
    """200 when model, database and indexes are loaded; says which model and if it is a fallback."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting", "ready": False}, status_code=503)
    database = ping(services.engine)
    body = {
        "status": "ready" if database else "database_unavailable",
        "ready": database,
        "database": database,
        "model": model_info(services.embedder).model_dump(),
        "fallback": services.embedder.loaded.fallback,
        "warnings": services.warnings,
        # Invariant 8: how far behind SQL this process's indexes may be (docs/replicas.md).
        "replication": replication(services, names=database),
    }
    return JSONResponse(body, status_code=200 if database else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    metrics = request.app.state.metrics
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        metrics.follows(
            [(_names(services).get(f.collection_id, ""), f) for f in services.indexes.replication()]
        )
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


READYZ_SLOWEST = 10  # collections /readyz details, most behind first (all are in /metrics)


def replication(services: Services, *, names: bool) -> dict[str, Any]:
    """How many collections this process follows, the most any lags, and where the most
    behind stand (by name while the database answers, by id otherwise)."""
    followed = services.indexes.replication()
    known = _names(services) if names and followed else {}
    return {
        "collections": len(followed),
        "lag_s": round(followed[0].lag_s, 3) if followed else 0.0,
        "slowest": [
            {
                "collection": known.get(f.collection_id, str(f.collection_id)),
                "position": f.position,
                "lag_s": round(f.lag_s, 3),
            }
            for f in followed[:READYZ_SLOWEST]
        ],
    }


def _names(services: Services) -> dict[int, str]:
    try:
        return {row.id: row.name for row in services.stores.collections.list()}
    except SQLAlchemyError:  # the database went away meanwhile: ids instead
        return {}
