"""Drawing a nuisance value inside a class's range, uniformly or at the range's ends."""

from __future__ import annotations

import numpy as np


def draw_in(rng: np.random.Generator, bounds: tuple[float, float], *, edge: bool = False) -> float:
    """Uniform in bounds, or (edge) within the outer 15% at one end of them."""
    lo, hi = bounds
    if not edge:
        return float(rng.uniform(lo, hi))
    inner = 0.15 * (hi - lo)
    return float(rng.uniform(lo, lo + inner) if rng.random() < 0.5 else rng.uniform(hi - inner, hi))
