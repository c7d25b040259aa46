"""Encoder + aligner head: media in, (raw feature, shared-space vector) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

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

    def texts(self, texts: Sequence[str]) -> Embedded:
        """Embed texts in one forward pass."""
        raw = self.encoder.encode_texts(texts)
        return Embedded(raw, self.aligner.project("text", raw))

    def images(self, images: Sequence[Image.Image]) -> Embedded:
        """Embed decoded RGB images in one forward pass."""
        raw = self.encoder.encode_images(images)
        return Embedded(raw, self.aligner.project("image", raw))
