"""Image decoding for uploads: type sniffing, a pixel limit checked before decoding, RGB output."""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

from models.errors import MediaTooLargeError, UnsupportedMediaError

# Pillow format name -> MIME type, for every format we accept.
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}

_ACCEPTED = "accepted types: " + ", ".join(IMAGE_CONTENT_TYPES.values())

# What Pillow raises on files it cannot identify or decode. UnidentifiedImageError is an
# OSError; IndexError/KeyError have come out of format plugins on malformed headers.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    Image.UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
)

# DIB header sizes a real BMP carries at offset 14: "BM" alone is too weak (any text may start so).
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Full-scale value of high-bit-depth modes, used only for flat images that have no range.
_NOMINAL_MAX: dict[str, float] = {"I;16": 65535.0, "I": 255.0, "F": 1.0}

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def sniff_image(data: bytes) -> str | None:
    """Return the MIME type the magic bytes announce for an accepted format, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return IMAGE_CONTENT_TYPES["JPEG"]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE_CONTENT_TYPES["PNG"]
    if data.startswith((b"GIF87a", b"GIF89a")):
        return IMAGE_CONTENT_TYPES["GIF"]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return IMAGE_CONTENT_TYPES["WEBP"]
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return IMAGE_CONTENT_TYPES["TIFF"]
    if _looks_like_bmp(data):
        return IMAGE_CONTENT_TYPES["BMP"]
    return None


def _looks_like_bmp(data: bytes) -> bool:
    """Tell whether the bytes start with a BMP file header and a known DIB header size."""
    if len(data) < 18 or not data.startswith(b"BM"):
        return False
    (dib_size,) = struct.unpack_from("<I", data, 14)
    return dib_size in _BMP_DIB_SIZES


def decode_image(data: bytes, *, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Decode image bytes into a fully loaded RGB image, refusing broken or oversized files.

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    whose shorter side is still at least ``min_side``: a 12-megapixel photo for a 224-pixel
    encoder costs a fraction of a full decode. Other formats decode in full.
    """
    if not data:
        raise UnsupportedMediaError(f"could not decode the image: the file is empty; {_ACCEPTED}")
    with warnings.catch_warnings():
        # Our own limit is checked from the header below, so Pillow's bomb warning adds nothing;
        # tests run with warnings as errors and it must not escape as an exception.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow reports recoverable metadata damage (corrupt EXIF, odd palettes, failed format
        # guesses) as UserWarning; the pixels are still usable or an exception follows anyway.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        try:
            return _decode(data, max_pixels, min_side)
        except Image.DecompressionBombError as exc:
            # Pillow's hard ceiling (2 * Image.MAX_IMAGE_PIXELS) caps any larger max_pixels.
            raise MediaTooLargeError(
                f"the image is too large to decode: {exc} (our limit is {max_pixels} pixels)"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise UnsupportedMediaError(f"could not decode the image: {exc}; {_ACCEPTED}") from exc


def _decode(data: bytes, max_pixels: int, min_side: int | None) -> Image.Image:
    """Open, check the header size, load the first frame, orient it and convert to RGB."""
    with Image.open(io.BytesIO(data), formats=list(IMAGE_CONTENT_TYPES)) as img:
        _check_pixels(img.size, max_pixels)
        if min_side and img.format == "JPEG":
            width, height = img.size
            scale = min_side / max(min(width, height), 1)
            img.draft(img.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        # Image.open leaves animated files (GIF/WEBP/APNG) on frame 0, so load() reads only it.
        img.load()
        # In place: the image is ours, and without an orientation tag a copy is all a
        # returned one would add.
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Raise MediaTooLargeError when the header's width*height exceeds max_pixels."""
    width, height = size
    if width * height > max_pixels:
        raise MediaTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_pixels} pixels"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, high bit depths scaled by range."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith(("I", "F")):
        # Checked before alpha: "I;16" with a tRNS key colour is rare and not worth a mask.
        return _scale_to_8bit(img).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite_alpha(img)
    return img.convert("RGB")


def _composite_alpha(img: Image.Image) -> Image.Image:
    """Flatten an image with an alpha channel or a transparent colour onto white."""
    # RGBA covers every source: palette/key-colour transparency becomes a real alpha channel,
    # and premultiplied modes are un-premultiplied on the way (La only converts via LA).
    rgba = (img.convert("LA") if img.mode == "La" else img).convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer or float image to 8-bit L by its actual min..max range."""
    # Clipping to 0..255 would turn a typical 16-bit file white; its real range carries the image.
    values = np.asarray(img)
    value_range = _finite_range(values)
    if value_range is None:
        return Image.new("L", img.size, 0)
    low, high = value_range
    if high == low:
        # A flat image has no range; place it on its mode's nominal scale instead.
        low, high = min(0.0, low), max(_nominal_max(img.mode), high)
    # float64: 32-bit integers with a large offset lose their low bits in float32.
    scaled = np.subtract(values, low, dtype=np.float64)
    scaled *= 255.0 / (high - low)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(np.rint(scaled, out=scaled), 0.0, 255.0, out=scaled)
    return Image.fromarray(scaled.astype(np.uint8))


def _finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """Return (min, max) over the finite values, or None when there are none."""
    if values.dtype.kind != "f":
        return float(values.min()), float(values.max())
    finite = np.isfinite(values)
    if not finite.any():
        return None
    # where= instead of values[finite]: no second full-size copy of a large image.
    low = np.min(values, where=finite, initial=np.inf)
    high = np.max(values, where=finite, initial=-np.inf)
    return float(low), float(high)


def _nominal_max(mode: str) -> float:
    """Return the full-scale value for a high-bit-depth mode (I;16 variants share one)."""
    return _NOMINAL_MAX["I;16" if mode.startswith("I;16") else mode[:1]]
