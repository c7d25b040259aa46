"""Colour classes as HSV ranges, jittered sampling within them, and contrast with backgrounds."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.synth.world.jitter import draw_in

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ColourRange:
    """Hue in degrees (may start below 0 to wrap through red), saturation and value in [0, 1]."""

    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]


# Ranges kept narrow enough that a person names every sample the same way: orange stays
# clear of red and yellow, dark yellow (olive) and dark orange (brown) are excluded.
COLOUR_RANGES: dict[str, ColourRange] = {
    "red": ColourRange((-8, 8), (0.75, 1.0), (0.65, 1.0)),
    "orange": ColourRange((26, 36), (0.8, 1.0), (0.88, 1.0)),
    "yellow": ColourRange((50, 58), (0.75, 1.0), (0.88, 1.0)),
    "green": ColourRange((100, 145), (0.6, 1.0), (0.5, 1.0)),
    "blue": ColourRange((208, 236), (0.65, 1.0), (0.55, 1.0)),
    "purple": ColourRange((270, 290), (0.6, 1.0), (0.5, 0.85)),
    "white": ColourRange((0, 360), (0.0, 0.06), (0.92, 1.0)),
    "black": ColourRange((0, 360), (0.0, 0.3), (0.0, 0.12)),
}

# Euclidean RGB distance a background keeps from every shape colour in the scene.
MIN_CONTRAST = 110.0


def hsv_to_rgb(hue: float, sat: float, val: float) -> RGB:
    """HSV (hue in degrees) to 8-bit RGB."""
    r, g, b = colorsys.hsv_to_rgb((hue % 360.0) / 360.0, sat, val)
    return (round(r * 255), round(g * 255), round(b * 255))


def prototype(name: str) -> RGB:
    """The middle of a colour's range: what the class looks like on average."""
    spec = COLOUR_RANGES[name]
    hue, sat, val = (sum(bounds) / 2 for bounds in (spec.hue, spec.sat, spec.val))
    achromatic = spec.hue[1] - spec.hue[0] >= 360  # white and black: any hue, so no tint
    return hsv_to_rgb(hue, 0.0 if achromatic else sat, val)


def sample_colour(name: str, rng: np.random.Generator, *, edge: bool = False) -> RGB:
    """A jittered instance of a colour class; edge draws from the ends of its ranges."""
    spec = COLOUR_RANGES[name]
    hue, sat, val = (draw_in(rng, bounds, edge=edge) for bounds in (spec.hue, spec.sat, spec.val))
    return hsv_to_rgb(hue, sat, val)


def contrast(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Euclidean distance between two RGB colours."""
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def contrasts_all(colour: Sequence[float], others: Sequence[Sequence[float]]) -> bool:
    """True when colour stands clearly apart from each of others."""
    return all(contrast(colour, other) >= MIN_CONTRAST for other in others)


def background_colour(rng: np.random.Generator, shapes: Sequence[RGB]) -> RGB:
    """A grey, tinted grey, or light/dark tint that contrasts with every shape colour."""
    for _ in range(40):
        candidate = _background_candidate(rng)
        if contrasts_all(candidate, shapes):
            return candidate
    # Rare (a very light and a very dark shape together): the best of a few fixed greys.
    greys: list[RGB] = [(g, g, g) for g in (90, 110, 128, 150, 170)]
    return max(greys, key=lambda g: min(contrast(g, s) for s in shapes))


def _background_candidate(rng: np.random.Generator) -> RGB:
    style = rng.integers(4)
    if style == 0:
        grey = int(rng.integers(60, 201))
        return (grey, grey, grey)
    if style == 1:
        tinted = np.clip(rng.integers(60, 201) + rng.integers(-18, 19, 3), 0, 255)
        r, g, b = (int(c) for c in tinted)
        return (r, g, b)
    if style == 2:
        return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.04, 0.2), rng.uniform(0.85, 0.97))
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.45), rng.uniform(0.08, 0.28))
