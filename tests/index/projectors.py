"""Projectors the index tests name for their collections, in a module of their own that
imports next to nothing: a build in a child process (index.builds) unpickles them there."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class SlowInAChild(Identity):
    """Projects in the process ``parent``; in any other, takes a minute first (a build in a
    child that is still running when the test stops it or kills its server)."""

    parent: int = 0

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        _a_minute_unless_in(self.parent)
        return super().project(modality, raw)


def _a_minute_unless_in(parent: int) -> None:
    if os.getpid() != parent:
        time.sleep(60)


def _after_a_minute_in_a_child(projector: object, parent: int) -> object:
    _a_minute_unless_in(parent)
    return projector


@dataclass(frozen=True)
class SlowToArrive:
    """Wraps a projector (the app's aligner) that a child process takes a minute to
    unpickle: a build in a child that is still running when the test shuts its server."""

    projector: Any
    parent: int

    @property
    def version(self) -> int:
        return int(self.projector.version)

    def project(self, modality: str, raw: np.ndarray) -> np.ndarray:
        return np.asarray(self.projector.project(modality, raw))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_after_a_minute_in_a_child, (self.projector, self.parent))
