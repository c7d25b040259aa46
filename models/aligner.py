"""Aligner heads: raw encoder features -> the shared, L2-normalised space.

Version 0 is the identity head for every modality; trained heads come with fine-tuning.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. The one place we normalise."""
    matrix = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class IdentityAligner:
    """The version-0 head: the encoder's own space, normalised."""

    version = 0

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        """Map raw features of a modality into the shared space."""
        del modality  # every modality shares the encoder's space at version 0
        return l2_normalize(raw)
