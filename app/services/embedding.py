"""Encoder + aligner head: media in, (raw feature, shared-space vector) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.aligner import IdentityAligner
from models.registry import LoadedModel


@dataclass
class Embedded:
    """Raw encoder features (kept for re-projection) and their aligned vectors."""

    raw: np.ndarray
    vectors: np.ndarray


class Embedder:
    """The active model of this process and its aligner heads."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.encoder = loaded.encoder
        self.aligner = IdentityAligner()

    @property
    def model_id(self) -> str:
        """The id every collection built by this process records."""
        return self.encoder.model_id

    @property
    def dim(self) -> int:
        """Dimension of the shared space."""
        return self.encoder.dim

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the model can encode."""
        return self.encoder.modalities

    @property
    def image_size(self) -> int:
        """Shorter side of the image tower's input, in pixels."""
        return self.encoder.image_size

    @property
    def audio_rate(self) -> int | None:
        """Sample rate audio is decoded to, or None when the model has no audio tower."""
        return self.encoder.audio_rate

    def texts(self, texts: Sequence[str]) -> Embedded:
        """Embed texts in one forward pass."""
        return self.encode("text", texts)

    def encode_mixed(self, modalities: Sequence[str], payloads: Sequence[Any]) -> Embedded:
        """Embed inputs of several modalities, one forward pass per modality, rows in order."""
        raw = np.zeros((len(payloads), self.dim), dtype=np.float32)
        vectors = np.zeros_like(raw)
        for modality in sorted(set(modalities)):
            where = [i for i, m in enumerate(modalities) if m == modality]
            done = self.encode(modality, [payloads[i] for i in where])
            raw[where], vectors[where] = done.raw, done.vectors
        return Embedded(raw, vectors)

    def encode(self, modality: str, payloads: Sequence[Any]) -> Embedded:
        """Embed decoded inputs of one modality (texts, RGB images or mono waves) together."""
        if modality == "text":
            raw = self.encoder.encode_texts(payloads)
        elif modality == "image":
            raw = self.encoder.encode_images(payloads)
        else:
            raw = self.encoder.encode_audio(payloads)
        return Embedded(raw, self.aligner.project(modality, raw))
