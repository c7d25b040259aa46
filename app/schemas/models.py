"""Bodies of /v1/models (and the model part of /readyz): what this process serves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AudioModelInfo(BaseModel):
    """The audio tower and the head that bridges it into the space."""

    id: str
    raw_dim: int = Field(description="width of the tower's own feature, before its head")
    sample_rate: int
    window_s: float = Field(description="seconds per segment; longer files are cut")
    hop_s: float = Field(description="seconds between segment starts")
    head: dict[str, Any] = Field(description="the audio head new collections start from")


class ModelInfo(BaseModel):
    """The model this process serves."""

    id: str
    requested: str
    dim: int
    modalities: list[str]
    fallback: bool
    device: str
    warning: str | None = None
    audio: AudioModelInfo | None = None
    precision: str = Field(
        "fp32", description="fp32, bf16, fp16 or int8 (MMR_PRECISION; int8: ONNX Runtime)"
    )
    precision_probe_min_cosine: float | None = Field(
        None, description="auto only: the probe's lowest cosine to fp32 on its fixed inputs"
    )


class LoadedModelInfo(BaseModel):
    """A model this process holds: its own, or one a collection records (model pool)."""

    id: str
    audio_model: str | None
    dim: int
    modalities: list[str]
    memory_mb: float = Field(description="its weights' memory")
    default: bool = Field(description="MMR_MODEL: never unloaded")
    in_use: int = Field(description="requests and jobs using it now")
    last_used: datetime


class ModelsResponse(BaseModel):
    """GET /v1/models."""

    active: ModelInfo
    loaded: list[LoadedModelInfo] = Field(
        default_factory=list, description="models loaded now, most recently used first"
    )
    memory_budget_mb: float = Field(0.0, description="MMR_MODEL_MEMORY_MB")
    syntax: list[str]
    audio_syntax: list[str]
    architectures: list[str]
