"""The training renderer: Pillow ImageDraw masks on a supersampled canvas, reduced and pasted."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from models.synth.world.colours import RGB, background_colour
from models.synth.world.layout import Placed, place_shapes

_SIDE = (64, 160)
_ASPECT = (0.8, 1.25)
_RESAMPLE = (None, Image.Resampling.BILINEAR, Image.Resampling.LANCZOS)  # None: box reduce()


def render_train(
    objects: Sequence[Mapping[str, str]], rng: np.random.Generator, *, clean: bool = False
) -> Image.Image:
    """Render a scene with every nuisance drawn from rng; clean: plain, no outline, no codec."""
    width, height = _canvas_size(rng)
    placed = place_shapes(objects, width, height, rng)
    colours = [p.rgb for p in placed]
    base = background_colour(rng, colours)
    noisy = not clean and rng.random() < 0.45
    if noisy:
        image = _noisy_background(rng, width, height, base, colours)
    else:
        image = Image.new("RGB", (width, height), base)
    factor = int(rng.integers(1, 5))
    resample = _RESAMPLE[int(rng.integers(len(_RESAMPLE)))]
    stroke = 0 if clean or rng.random() >= 0.3 else int(rng.integers(1, 4))
    for i in rng.permutation(len(placed)):
        _draw(image, placed[i], factor, resample, stroke, _stroke_colour(rng, placed[i].rgb))
    return image if clean else _degrade(image, rng)


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """The image after a JPEG encode and decode at quality: block and ringing artefacts."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    decoded = Image.open(buffer, formats=["JPEG"])
    decoded.load()
    return decoded if decoded.mode == "RGB" else decoded.convert("RGB")


def _canvas_size(rng: np.random.Generator) -> tuple[int, int]:
    width = int(rng.integers(_SIDE[0], _SIDE[1] + 1))
    if rng.random() >= 0.3:
        return width, width
    height = round(width * rng.uniform(*_ASPECT))
    return width, min(max(height, _SIDE[0]), _SIDE[1])


def _noisy_background(
    rng: np.random.Generator, width: int, height: int, base: RGB, shapes: Sequence[RGB]
) -> Image.Image:
    """Gaussian, uniform or blotchy noise around base, a gradient or a two-tone pattern."""
    plain = Image.new("RGB", (width, height), base)
    kind = int(rng.integers(6))
    if kind == 2:
        return _blotches(rng, width, height, base)
    if kind >= 3:
        other = Image.new("RGB", (width, height), background_colour(rng, shapes))
        mask = _ramp(rng, width, height) if kind == 3 else _pattern(rng, width, height)
        return Image.composite(other, plain, mask)
    # Crops of a fixed noise bank: drawing fresh noise per pixel costs more than the shapes.
    bank = _noise_bank(gaussian=kind == 0)
    top = int(rng.integers(bank.shape[0] - height + 1))
    left = int(rng.integers(bank.shape[1] - width + 1))
    crop = bank[top : top + height, left : left + width]
    crop = crop[..., int(rng.integers(3))] if rng.random() < 0.6 else crop
    spread = rng.uniform(3, 16) if kind == 0 else rng.uniform(5, 25)
    noise = Image.fromarray((crop * spread + 128).clip(0, 255).astype(np.uint8)).convert("RGB")
    return ImageChops.add(plain, noise, offset=-128)


@functools.cache
def _noise_bank(*, gaussian: bool) -> np.ndarray:
    """A constant (256, 256, 3) texture of unit gaussian or uniform[-1, 1] noise."""
    rng = np.random.default_rng(20240601 + gaussian)
    shape = (_SIDE[1] + 96, _SIDE[1] + 96, 3)
    if gaussian:
        return rng.standard_normal(shape, dtype=np.float32)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _blotches(rng: np.random.Generator, width: int, height: int, base: RGB) -> Image.Image:
    """A few smooth tinted blotches: a coarse random grid upsampled bicubically."""
    grid = (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3)
    coarse = rng.normal(0, rng.uniform(6, 20), grid) + np.asarray(base)
    small = Image.fromarray(coarse.clip(0, 255).astype(np.uint8))
    return small.resize((width, height), Image.Resampling.BICUBIC)


def _ramp(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """An "L" mask rising linearly from 0 to 255 along a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.arange(width, dtype=np.float32) * (math.cos(angle) / width)
    ys = np.arange(height, dtype=np.float32) * (math.sin(angle) / height)
    t = ys[:, None] + xs[None, :]
    t -= t.min()
    t *= 255 / max(float(t.max()), 1e-6)
    return Image.fromarray(t.astype(np.uint8))


def _pattern(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """An "L" mask of stripes at a random angle or of a checkerboard, with a random period."""
    period = rng.uniform(4, 24)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        on = ((xs * math.cos(angle) + ys * math.sin(angle)) // period) % 2
    else:
        on = (xs // period + ys // period) % 2
    return Image.fromarray((on * 255).astype(np.uint8))


def _stroke_colour(rng: np.random.Generator, fill: RGB) -> RGB:
    """A darker shade of the fill, or black, or white."""
    pick = rng.random()
    if pick < 0.5:
        shade = rng.uniform(0.3, 0.6)
        r, g, b = (round(c * shade) for c in fill)
        return (r, g, b)
    return (0, 0, 0) if pick < 0.75 else (255, 255, 255)


def _draw(
    image: Image.Image,
    shape: Placed,
    factor: int,
    resample: Image.Resampling | None,
    stroke: int,
    stroke_rgb: RGB,
) -> None:
    """Paste the shape (and its outline) through supersampled coverage masks of its box."""
    x0, y0, x1, y1 = shape.bbox()
    left, top = max(math.floor(x0) - stroke - 1, 0), max(math.floor(y0) - stroke - 1, 0)
    right = min(math.ceil(x1) + stroke + 1, image.width)
    bottom = min(math.ceil(y1) + stroke + 1, image.height)
    if right <= left or bottom <= top:
        return
    box = (left, top, right, bottom)
    image.paste(shape.rgb, (left, top), _mask(shape, box, factor, resample, 0))
    if stroke:
        image.paste(stroke_rgb, (left, top), _mask(shape, box, factor, resample, stroke))


def _mask(
    shape: Placed,
    box: tuple[int, int, int, int],
    factor: int,
    resample: Image.Resampling | None,
    stroke: int,
) -> Image.Image:
    """Coverage of the shape's interior (stroke 0) or of its outline, at the box's pixel size."""
    left, top, right, bottom = box
    canvas = Image.new("L", ((right - left) * factor, (bottom - top) * factor))
    draw = ImageDraw.Draw(canvas)
    fill, outline = (255, None) if stroke == 0 else (None, 255)
    if shape.shape == "circle":
        cx, cy, r = shape.centre[0] - left, shape.centre[1] - top, shape.radius
        corners = [(cx - r) * factor, (cy - r) * factor, (cx + r) * factor, (cy + r) * factor]
        draw.ellipse(corners, fill=fill, outline=outline, width=stroke * factor)
    else:
        points = [((x - left) * factor, (y - top) * factor) for x, y in shape.corners]
        draw.polygon(points, fill=fill, outline=outline, width=stroke * factor)
    if factor == 1:
        return canvas
    if resample is None:
        return canvas.reduce(factor)
    return canvas.resize((right - left, bottom - top), resample)


def _degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sometimes a slight blur, sometimes a JPEG round trip."""
    if rng.random() < 0.15:  # a down-up resample: softer edges, cheaper than a blur kernel
        scale = rng.uniform(0.55, 0.85)
        small = (max(round(image.width * scale), 8), max(round(image.height * scale), 8))
        image = image.resize(small, Image.Resampling.BILINEAR).resize(image.size)
    if rng.random() < 0.35:
        image = jpeg_roundtrip(image, int(rng.integers(20, 96)))
    return image
