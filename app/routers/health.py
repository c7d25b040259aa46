"""Health, readiness and metrics (open even when API keys are set)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

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
    followed, lag = services.indexes.replication()
    body = {
        "status": "ready" if database else "database_unavailable",
        "ready": database,
        "database": database,
        "model": model_info(services.embedder).model_dump(),
        "fallback": services.embedder.loaded.fallback,
        "warnings": services.warnings,
        # Invariant 8: how far behind SQL this process's indexes may be (docs/replicas.md).
        "replication": {"collections": followed, "lag_s": round(lag, 3)},
    }
    return JSONResponse(body, status_code=200 if database else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    metrics = request.app.state.metrics
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        metrics.replication_lag.set(services.indexes.replication()[1])
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
