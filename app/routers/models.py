"""The active model: /v1/models."""

from __future__ import annotations

from fastapi import APIRouter

from app.schemas import ModelInfo, ModelsResponse
from app.state import Services, ServicesDep
from models.registry import list_architectures

router = APIRouter(prefix="/v1", tags=["models"])

ID_SYNTAX = [
    "open_clip:ARCH/PRETRAINED",
    "open_clip:ARCH@/path/to/checkpoint",
    "random:ARCH",
    "mmr-mini",
    "mmr-mini@/path/to/dir",
    "auto",
]


def model_info(services: Services) -> ModelInfo:
    """What this process serves, and whether it is the offline fallback."""
    emb = services.embedder
    return ModelInfo(
        id=emb.model_id,
        requested=emb.loaded.requested,
        dim=emb.dim,
        modalities=list(emb.modalities),
        fallback=emb.loaded.fallback,
        device=emb.encoder.device,
        warning=emb.loaded.warning,
    )


@router.get("/models", response_model=ModelsResponse)
def get_models(services: ServicesDep) -> ModelsResponse:
    """The active model (id, dim, modalities, fallback) and the id syntax."""
    return ModelsResponse(
        active=model_info(services), syntax=ID_SYNTAX, architectures=list_architectures()
    )
