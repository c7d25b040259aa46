"""How long training may run: a deadline on a clock the caller passes in (tests pass a fake)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """``max_seconds`` of training from ``began`` on ``clock``."""

    began: float
    max_seconds: float = math.inf
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def start(
        cls, max_seconds: float = math.inf, *, clock: Callable[[], float] = time.monotonic
    ) -> Budget:
        """A budget whose time starts now."""
        return cls(clock(), max_seconds, clock)

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self.clock() - self.began

    def expired(self) -> bool:
        """True once more than ``max_seconds`` have passed."""
        return self.clock() > self.began + self.max_seconds
