"""The active model: /v1/models."""

from __future__ import annotations

from fastapi import APIRouter

from app.schemas.models import AudioModelInfo, ModelInfo, ModelsResponse
from app.state import Services, ServicesDep
from models.encoders.registry import AUDIO_SYNTAX, list_architectures

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
    probe = emb.loaded.precision.probe_min_cosine
    return ModelInfo(
        id=emb.model_id,
        requested=emb.loaded.requested,
        dim=emb.dim,
        modalities=list(emb.modalities),
        fallback=emb.loaded.fallback,
        device=emb.encoder.device,
        warning=emb.loaded.warning,
        audio=_audio_info(services),
        precision=emb.loaded.precision.name,
        precision_probe_min_cosine=None if probe is None else round(probe, 5),
    )


def _audio_info(services: Services) -> AudioModelInfo | None:
    emb = services.embedder
    if emb.audio is None:
        return None
    aligner = emb.default_aligner
    made = {f"made_by_{k}": v for k, v in aligner.meta.items() if k in ("kind", "corpus")}
    if "bootstrap" in aligner.meta:
        made["heldout_recall"] = aligner.meta["bootstrap"].get("after")
    return AudioModelInfo(
        id=emb.audio.model_id,
        raw_dim=emb.audio.dim,
        sample_rate=emb.audio.sample_rate,
        window_s=emb.audio.window_s,
        hop_s=emb.audio.hop_s,
        head=aligner.describe()["audio"] | made,
    )


@router.get("/models", response_model=ModelsResponse)
def get_models(services: ServicesDep) -> ModelsResponse:
    """The active model (id, dim, modalities, fallback, precision) and the id syntax."""
    return ModelsResponse(
        active=model_info(services),
        syntax=ID_SYNTAX,
        audio_syntax=[s or "(empty: the model's own)" for s in AUDIO_SYNTAX],
        architectures=list_architectures(),
    )
