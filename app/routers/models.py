"""The active model: /v1/models."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from app.deps import EmbedderDep, ModelsDep
from app.schemas.models import AudioModelInfo, LoadedModelInfo, ModelInfo, ModelsResponse
from app.services.embedding import Embedder
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


def model_info(embedder: Embedder) -> ModelInfo:
    """What this process serves, and whether it is the offline fallback."""
    probe = embedder.loaded.precision.probe_min_cosine
    return ModelInfo(
        id=embedder.model_id,
        requested=embedder.loaded.requested,
        dim=embedder.dim,
        modalities=list(embedder.modalities),
        fallback=embedder.loaded.fallback,
        device=embedder.encoder.device,
        warning=embedder.loaded.warning,
        audio=_audio_info(embedder),
        precision=embedder.loaded.precision.name,
        precision_probe_min_cosine=None if probe is None else round(probe, 5),
    )


def _audio_info(embedder: Embedder) -> AudioModelInfo | None:
    if embedder.audio is None:
        return None
    aligner = embedder.default_aligner
    made = {f"made_by_{k}": v for k, v in aligner.meta.items() if k in ("kind", "corpus")}
    if "bootstrap" in aligner.meta:
        made["heldout_recall"] = aligner.meta["bootstrap"].get("after")
    return AudioModelInfo(
        id=embedder.audio.model_id,
        raw_dim=embedder.audio.dim,
        sample_rate=embedder.audio.sample_rate,
        window_s=embedder.audio.window_s,
        hop_s=embedder.audio.hop_s,
        head=aligner.describe()["audio"] | made,
    )


@router.get("/models", response_model=ModelsResponse)
def get_models(embedder: EmbedderDep, models: ModelsDep) -> ModelsResponse:
    """The active model (id, dim, modalities, fallback, precision), the models loaded for
    collections that record others, and the id syntax."""
    return ModelsResponse(
        active=model_info(embedder),
        loaded=[
            LoadedModelInfo(
                id=m.model,
                audio_model=m.audio_model,
                dim=m.dim,
                modalities=list(m.modalities),
                memory_mb=m.memory_mb,
                default=m.default,
                in_use=m.in_use,
                last_used=datetime.fromtimestamp(m.last_used, UTC),
            )
            for m in models.loaded()
        ],
        memory_budget_mb=round(models.budget_bytes / 2**20, 1),
        syntax=ID_SYNTAX,
        audio_syntax=[s or "(empty: the model's own)" for s in AUDIO_SYNTAX],
        architectures=list_architectures(),
    )
