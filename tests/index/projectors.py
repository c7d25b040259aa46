"""Projectors the index tests name for their collections, in a module of their own that
imports next to nothing: a build in a child process (index.builds) unpickles them there."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Identity:
    """The projector SQL names for a collection: stored vectors as they are."""

    version: int

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)


@dataclass(frozen=True)
class FailsInAChild(Identity):
    """Projects in the process ``parent``, raises in any other (a child that dies mid-build)."""

    parent: int = 0

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        if os.getpid() != self.parent:
            raise MemoryError("killed mid-build")
        return super().project(modality, raw)
