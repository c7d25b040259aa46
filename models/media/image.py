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
from models.media.budget import RequestBudget

# Pillow format name -> MIME type, for every format we accept.
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}

# How an upload becomes the encoder's input (app/services/media.decode_upload: draft decode,
# shrink to two to four times the input side, then the model's own transform). Features
# computed elsewhere (mmr ingest --engine ray) name it, and a server that decodes otherwise
# refuses them; change it whenever a change here moves the pixels the encoder sees.
IMAGE_PREPROCESS = "mmr-image-1"
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

# The longest side a shrunk image keeps, in multiples of ``shrink_to``: a panorama up to
# 8:1 keeps the shorter side the encoder needs, a longer one gets fewer pixels.
KEPT_SIDES = 16
# Bytes a pixel of a shrunk image may take while it is oriented and converted to RGB: the
# image (4), a transposed copy (4), and the costliest conversion, high bit depths scaled
# through float64 (4 + 8 + 1 + 1, then RGB 4); compositing alpha takes less (4 x 4).
_KEPT_COPY_BYTES = 26
# Full-size copies of a WebP's pixels while it decodes: libwebp's RGBA buffer, the bytes
# Pillow makes of it, the image and its conversion from RGBA (measured: 3.9).
_WEBP_COPIES = 4


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


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int | None = None,
    shrink_to: int | None = None,
    budget: RequestBudget | None = None,
) -> Image.Image:
    """Decode image bytes into a fully loaded RGB image, refusing broken or oversized files.

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    whose shorter side is still at least ``min_side``: a 12-megapixel photo for a 224-pixel
    encoder costs a fraction of a full decode. Other formats decode in full.

    With ``shrink_to``, any image is reduced right after decoding, before it is converted or
    kept: averaged over boxes of an integer factor so that its shorter side stays at least
    ``shrink_to`` (under twice that) and its longer side at most ``KEPT_SIDES`` times
    ``shrink_to`` (only a long panorama loses detail). A 62 KB PNG of 8000x8000 then holds
    0.2 MB with ``shrink_to=224``, not 256.

    With ``budget`` (the request's), what the image will keep and the decode's peak are
    reserved there before any pixel is decoded (413 over the request's budget or when the
    peak could never fit the process's, 429 when the process's stays full); what the
    returned image holds stays reserved in the process's until it is garbage collected.
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
            return _decode(data, max_pixels, min_side, shrink_to, budget)
        except Image.DecompressionBombError as exc:
            # Pillow's hard ceiling (2 * Image.MAX_IMAGE_PIXELS) caps any larger max_pixels.
            raise MediaTooLargeError(
                f"the image is too large to decode: {exc} (our limit is {max_pixels} pixels)"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise UnsupportedMediaError(f"could not decode the image: {exc}; {_ACCEPTED}") from exc


def _decode(
    data: bytes,
    max_pixels: int,
    min_side: int | None,
    shrink_to: int | None,
    budget: RequestBudget | None,
) -> Image.Image:
    """Open, check the header size, load the first frame, shrink, orient, convert to RGB."""
    with Image.open(io.BytesIO(data), formats=list(IMAGE_CONTENT_TYPES)) as img:
        _check_pixels(img.size, max_pixels)
        if min_side and img.format == "JPEG":
            width, height = img.size
            scale = min_side / max(min(width, height), 1)
            img.draft(img.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        factor = shrink_factor(img.size, shrink_to)
        if budget is None:
            return _decoded(img, factor)
        what = f"the {img.width}x{img.height} image"
        kept = kept_size(img.size, factor)
        with budget.reserve(peak_bytes(img, factor), kept[0] * kept[1] * 4, what) as reservation:
            rgb = _decoded(img, factor)
            reservation.keep(rgb, held_bytes(rgb), what)
            return rgb


def _decoded(img: Image.Image, factor: int) -> Image.Image:
    """The opened image loaded (its first frame), shrunk by ``factor``, oriented and RGB."""
    # Image.open leaves animated files (GIF/WEBP/APNG) on frame 0, so load() reads only it.
    img.load()
    small = _shrink(img, factor)
    if small is not img:
        img.close()  # frees the full-size pixels now, not when the caller's `with` ends
    # In place: the image is ours, and without an orientation tag a copy is all a
    # returned one would add.
    ImageOps.exif_transpose(small, in_place=True)
    return _to_rgb(small)


def shrink_factor(size: tuple[int, int], shrink_to: int | None) -> int:
    """The integer factor ``decode_image`` reduces an image of ``size`` by (1: kept whole):
    the largest that keeps the shorter side at least ``shrink_to``, or more for a panorama
    whose longer side would stay over ``KEPT_SIDES * shrink_to``."""
    if not shrink_to:
        return 1
    width, height = size
    by_short_side = min(width, height) // shrink_to
    by_long_side = -(-max(width, height) // (KEPT_SIDES * shrink_to))
    return max(1, by_short_side, by_long_side)


def _shrink(img: Image.Image, factor: int) -> Image.Image:
    """Average ``img`` over ``factor`` x ``factor`` boxes (the same image when 1)."""
    if factor == 1:
        return img
    source_mode = img.mode
    convert = _before_reducing(img)
    if convert is not None:
        full = img.convert(convert)
        img.close()
        img = full
    if img.mode.startswith("I;16"):  # reduce() does not take 16-bit modes; resize() does
        return img.resize(kept_size(img.size, factor), Image.Resampling.BOX)
    small = img.reduce(factor)
    # Big-endian 16 bits went through "I": back to 16 bits, scaled as it would have been.
    return small.convert("I;16") if source_mode.startswith("I;16") else small


def _before_reducing(img: Image.Image) -> str | None:
    """The mode to convert ``img`` to before averaging its pixels, or None to keep its own:
    averaging palette indices or key colours would invent colours, and resize() reads
    big-endian 16-bit pixels as little-endian (and convert("I;16") clips them to 8 bits)."""
    if img.mode in ("P", "PA") or "transparency" in img.info:
        return "RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"
    if img.mode.startswith("I;16") and img.mode not in ("I;16", "I;16L"):
        return "I"
    return "L" if img.mode == "1" else None


def peak_bytes(img: Image.Image, factor: int) -> int:
    """Most bytes decoding the opened ``img`` and shrinking it by ``factor`` holds at once:
    its full-size pixels, the full-size copies shrinking makes, and the shrunk image with
    every copy that orienting and converting it to RGB may make (measured on each format:
    tests/models/media/test_image_memory.py)."""
    width, height = img.size
    full = width * height
    decoded = full * pixel_bytes(img.mode) * (_WEBP_COPIES if img.format == "WEBP" else 1)
    copies = full * _shrink_copy_bytes(img) if factor > 1 else 0
    kept_width, kept_height = kept_size(img.size, factor)
    return decoded + copies + kept_width * kept_height * _KEPT_COPY_BYTES


def kept_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size of an image of ``size`` reduced by ``factor`` (partial boxes count)."""
    return -(-size[0] // factor), -(-size[1] // factor)


def _shrink_copy_bytes(img: Image.Image) -> int:
    """Bytes a pixel of the full-size copies that ``_shrink`` makes takes."""
    mode = _before_reducing(img) or img.mode
    converted = pixel_bytes(mode) if mode != img.mode else 0
    # reduce() averages LA and RGBA premultiplied, through a copy in La / RGBa.
    return converted + (4 if mode in ("LA", "RGBA") else 0)


def held_bytes(img: Image.Image) -> int:
    """Bytes a loaded image's pixels hold (Pillow stores RGB in 4 bytes a pixel)."""
    return img.width * img.height * pixel_bytes(img.mode)


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow stores a pixel of ``mode`` in."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


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
