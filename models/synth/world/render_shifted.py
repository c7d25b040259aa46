"""The shifted renderer: a numpy signed-distance rasteriser with its own nuisance distributions.

It shares only the region/size definitions with the training renderer; pixels, anti-aliasing,
backgrounds and codec settings come from a separate code path, so a model evaluated on it is
tested on images drawn differently from the ones it learned from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from models.synth.world.colours import RGB, background_colour, contrast
from models.synth.world.layout import Placed, place_shapes
from models.synth.world.render_train import jpeg_roundtrip

_SIDE = (96, 256)


def render_shifted(
    objects: Sequence[Mapping[str, str]], rng: np.random.Generator, *, clean: bool = False
) -> Image.Image:
    """A square scene at class extremes over patterned backgrounds; clean: plain, no codec."""
    side = int(rng.integers(_SIDE[0], _SIDE[1] + 1))
    placed = place_shapes(objects, side, side, rng, edge=True)
    colours = [p.rgb for p in placed]
    canvas = _backdrop(rng, side, colours, plain=clean)
    soft = rng.uniform(0.6, 2.5)  # anti-aliasing ramp width in pixels
    stroke = 0.0 if clean or rng.random() >= 0.35 else rng.uniform(1.0, 4.0)
    for i in rng.permutation(len(placed)):
        shade = 0.0 if clean else rng.uniform(-0.08, 0.08)
        _composite(canvas, placed[i], soft, stroke, shade)
    pixels = canvas.clip(0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if not clean and rng.random() < 0.4:
        image = jpeg_roundtrip(image, int(rng.integers(20, 61)))
    return image


def _backdrop(
    rng: np.random.Generator, side: int, shapes: Sequence[RGB], *, plain: bool
) -> np.ndarray:
    """Plain, stripes, checkerboard, linear or radial gradient; float32 (3, side, side).

    Channels come first throughout this renderer: numpy broadcasts a per-channel colour
    over long contiguous rows far faster than over a trailing axis of length 3.
    """
    first = np.asarray(background_colour(rng, shapes), dtype=np.float32)[:, None, None]
    kind = 0 if plain else int(rng.integers(5))
    if kind == 0:
        return np.broadcast_to(first, (3, side, side)).copy()
    second = np.asarray(_second_colour(rng, shapes, first), dtype=np.float32)[:, None, None]
    axis = np.arange(side, dtype=np.float32)
    ys, xs = axis[:, None], axis[None, :]
    if kind == 1:
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 30)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        t = (np.floor(phase) % 2).astype(np.float32)
    elif kind == 2:
        cell = rng.uniform(4, 24)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    elif kind == 3:
        t = np.broadcast_to((xs if rng.random() < 0.5 else ys) / side, (side, side))
    else:
        cx, cy = rng.uniform(0, side, 2)
        t = np.hypot(xs - cx, ys - cy) / (side * math.sqrt(2))
    return first + t * (second - first)


def _second_colour(rng: np.random.Generator, shapes: Sequence[RGB], first: np.ndarray) -> RGB:
    """Another background colour near enough to the first that patterns do not look like shapes."""
    for _ in range(20):
        candidate = background_colour(rng, shapes)
        if contrast(candidate, first.ravel()) <= 120:
            return candidate
    r, g, b = (int(c) for c in first.ravel())
    return (r, g, b)


def _composite(canvas: np.ndarray, shape: Placed, soft: float, stroke: float, shade: float) -> None:
    """Blend the shape's coverage (and a darker outline ring) into canvas in place."""
    margin = soft + stroke + 1
    x0, y0, x1, y1 = shape.bbox()
    left, top = max(int(x0 - margin), 0), max(int(y0 - margin), 0)
    _, height, width = canvas.shape
    right, bottom = min(int(x1 + margin) + 1, width), min(int(y1 + margin) + 1, height)
    if right <= left or bottom <= top:
        return
    ys = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
    distance = _signed_distance(shape, xs, ys)
    cover = np.clip(0.5 - distance / soft, 0.0, 1.0)
    rgb = np.asarray(shape.rgb, dtype=np.float32)[:, None, None]
    # A faint lighting ramp across the shape: other programs often shade their fills.
    lighting = 1 + shade * (xs - shape.centre[0]) / max(shape.radius, 1.0)
    region = canvas[:, top:bottom, left:right]
    region += cover * ((rgb * lighting).clip(0, 255) - region)
    if stroke:
        ring = np.clip(0.5 - (np.abs(distance) - stroke / 2) / soft, 0.0, 1.0)
        region += ring * (rgb * 0.45 - region)


def _signed_distance(shape: Placed, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance to the boundary, negative inside (exact for circles, edge-wise for polygons)."""
    cx, cy = shape.centre
    if shape.shape == "circle":
        return np.hypot(xs - cx, ys - cy) - shape.radius
    corners = shape.corners
    edges = np.roll(corners, -1, axis=0) - corners
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / np.hypot(*edges.T)[:, None]
    offsets = (normals * corners).sum(axis=1)
    # Orientation depends on the rotation drawn: point every normal away from the centre.
    flip = np.where(normals @ np.array([cx, cy]) - offsets > 0, -1.0, 1.0)
    normals, offsets = normals * flip[:, None], offsets * flip
    distance = np.full(np.broadcast_shapes(xs.shape, ys.shape), -np.inf, dtype=np.float32)
    for (nx, ny), offset in zip(normals, offsets, strict=True):
        plane = xs * np.float32(nx) + ys * np.float32(ny) - np.float32(offset)
        np.maximum(distance, plane, out=distance)
    return distance
