"""Bodies of /v1/models (and the model part of /readyz): what this process serves."""

from __future__ import annotations

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


class ModelsResponse(BaseModel):
    """GET /v1/models."""

    active: ModelInfo
    syntax: list[str]
    audio_syntax: list[str]
    architectures: list[str]
