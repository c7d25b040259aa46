"""Where shapes go and how big they are: the geometry both image renderers share."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.synth.world.colours import RGB, sample_colour
from models.synth.world.jitter import draw_in

# Centre of a shape as fractions of (width, height). Side regions keep to the middle band
# and "center" to a small box, so the five stay apart and two shapes have room.
REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "left": ((0.12, 0.35), (0.35, 0.65)),
    "right": ((0.65, 0.88), (0.35, 0.65)),
    "top": ((0.35, 0.65), (0.12, 0.35)),
    "bottom": ((0.35, 0.65), (0.65, 0.88)),
    "center": ((0.42, 0.58), (0.42, 0.58)),
}

# A shape's size over the image's short side: a circle's diameter, a square's side / 0.9, an
# equilateral triangle's side / 1.2 (isosceles ones have that one's area).
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.14, 0.24), "large": (0.32, 0.48)}

# A square's side and an equilateral triangle's side as multiples of size: at these the
# three shapes of one size look about equally big.
_SQUARE_SIDE = 0.9
_TRIANGLE_LEG = 1.2
_EQUILATERAL = math.pi / 3
_ATTEMPTS = 40

_Hull = tuple["Placed", list[list[float]]]  # a shape with its corners as plain floats


@dataclass(frozen=True, eq=False)
class Placed:
    """One shape laid out in pixel coordinates (y grows downwards), with its drawn colour."""

    shape: str
    centre: tuple[float, float]
    size: float
    corners: np.ndarray  # (k, 2) polygon vertices in pixels; (0, 2) for a circle
    rgb: RGB

    @property
    def radius(self) -> float:
        """Half the size (a circle's radius)."""
        return self.size / 2

    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in pixels, not clipped to the image."""
        cx, cy = self.centre
        if self.shape == "circle":
            return (cx - self.radius, cy - self.radius, cx + self.radius, cy + self.radius)
        v = self.corners
        return (v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max())


def place_shapes(
    objects: Sequence[Mapping[str, str]],
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    edge: bool = False,
) -> list[Placed]:
    """Draw size, rotation, position and colour of each object; edge favours class extremes.

    Two shapes are redrawn until a small gap separates them; where their regions and sizes
    leave no room (rare), the best-separated of the draws is kept.
    """
    margin = 0.02 * min(width, height)
    best: list[Placed] = []
    best_gap = -math.inf
    for _ in range(_ATTEMPTS):
        placed = [_place_one(obj, width, height, rng, edge) for obj in objects]
        gap = separation(placed[0], placed[1]) if len(placed) == 2 else math.inf
        if gap >= margin:
            return placed
        if gap > best_gap:
            best, best_gap = placed, gap
    return best


def separation(a: Placed, b: Placed) -> float:
    """Widest gap between two convex shapes along a separating axis; negative when they overlap.

    Plain floats rather than numpy: the arrays are a few points long and this runs per draw.
    """
    points_a, points_b = a.corners.tolist(), b.corners.tolist()
    axes = [*_normals(points_a), *_normals(points_b)]
    for circle, targets in ((a, points_b or [b.centre]), (b, points_a or [a.centre])):
        if circle.shape == "circle":
            # A circle's candidate axes point at the other shape's corners (or centre).
            cx, cy = circle.centre
            axes.extend(_unit(x - cx, y - cy) for x, y in targets)
    return max(_gap_along((a, points_a), (b, points_b), axis) for axis in axes)


def _unit(x: float, y: float) -> tuple[float, float]:
    length = max(math.hypot(x, y), 1e-9)
    return x / length, y / length


def _normals(points: list[list[float]]) -> list[tuple[float, float]]:
    pairs = zip(points, points[1:] + points[:1], strict=True)
    return [_unit(y1 - y0, x0 - x1) for (x0, y0), (x1, y1) in pairs]


def _gap_along(a: _Hull, b: _Hull, axis: tuple[float, float]) -> float:
    (a_low, a_high), (b_low, b_high) = _extent(*a, axis), _extent(*b, axis)
    return max(b_low - a_high, a_low - b_high)


def _extent(
    shape: Placed, points: list[list[float]], axis: tuple[float, float]
) -> tuple[float, float]:
    """The shape's projection onto a unit axis, (low, high)."""
    ax, ay = axis
    if not points:
        middle = shape.centre[0] * ax + shape.centre[1] * ay
        return middle - shape.radius, middle + shape.radius
    projected = [x * ax + y * ay for x, y in points]
    return min(projected), max(projected)


def _place_one(
    obj: Mapping[str, str], width: int, height: int, rng: np.random.Generator, edge: bool
) -> Placed:
    size = draw_in(rng, SIZE_RANGES[obj["size"]], edge=edge) * min(width, height)
    offsets = _outline(obj["shape"], size, rng)
    if offsets.size:
        half_w, half_h = np.abs(offsets).max(axis=0)
    else:
        half_w = half_h = size / 2
    xs, ys = REGIONS[obj["position"]]
    cx = _coordinate(rng, xs, width, half_w, edge)
    cy = _coordinate(rng, ys, height, half_h, edge)
    rgb = sample_colour(obj["colour"], rng, edge=edge)
    return Placed(obj["shape"], (cx, cy), size, offsets + np.array([cx, cy]), rgb)


def _coordinate(
    rng: np.random.Generator, bounds: tuple[float, float], length: int, half: float, edge: bool
) -> float:
    """A centre coordinate in the region, pulled in so the shape stays (nearly) inside."""
    lo = max(bounds[0], (half + 1) / length)
    hi = min(bounds[1], 1 - (half + 1) / length)
    if lo > hi:  # a wide triangle at the top of its size class: keep the region, crop a sliver
        lo = hi = min(max((lo + hi) / 2, bounds[0]), bounds[1])
    return draw_in(rng, (lo, hi), edge=edge) * length


def _outline(shape: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """Vertex offsets from the centre, any rotation; triangles equilateral or mildly isosceles."""
    if shape == "circle":
        return np.empty((0, 2))
    if shape == "square":
        half = _SQUARE_SIDE * size / 2
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    else:
        apex = _EQUILATERAL if rng.random() < 0.5 else rng.uniform(0.8, 1.33)
        # Legs chosen so every apex angle gives the equilateral's area: size stays comparable.
        leg = _TRIANGLE_LEG * size * math.sqrt(math.sin(_EQUILATERAL) / math.sin(apex))
        height, half_base = leg * math.cos(apex / 2), leg * math.sin(apex / 2)
        corners = np.array(
            [[0.0, -2 * height / 3], [half_base, height / 3], [-half_base, height / 3]]
        )
    angle = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    return corners @ np.array([[cos, sin], [-sin, cos]])
