"""Builders of test inputs shared by the test suites; each media kind has its own section."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from app.state import Services
from index.items import ItemDraft
from index.stores import Stores
from index.tables import CollectionRow
from models.encoders.aligner import Aligner

# --- images ---
#
# Every image is non-uniform (seeded block noise over a seeded colour gradient), at least
# 64x48, and different for every seed. Conventions the tests rely on:
# - modes with transparency (LA, RGBA, PA, transparent P) have their left quarter
#   (x < width // 4) fully transparent over black, the rest fully opaque;
# - high-bit-depth modes span a known range: I;16/I;16B 0..65535, I -1_000_000..5_000_000,
#   F -0.5..1.5 (deliberately outside 0..1 and 0..255, so clipping would show);
# - animated images have 3 frames dominated by red, green, blue in that order;
# - the EXIF-rotated JPEG stores a pure red 16x16 block at its top-left corner.

IMAGE_SIZE = (64, 48)

# Pillow mode -> format it is saved in when image_bytes() is given no fmt.
_DEFAULT_FORMAT = {
    "1": "PNG",
    "L": "PNG",
    "P": "PNG",
    "LA": "PNG",
    "RGB": "PNG",
    "RGBA": "PNG",
    "PA": "TIFF",
    "CMYK": "JPEG",
    "YCbCr": "TIFF",
    "I;16": "PNG",
    "I;16B": "TIFF",
    "I": "TIFF",
    "F": "TIFF",
}

HIGH_BIT_RANGES: dict[str, tuple[float, float]] = {
    "I;16": (0.0, 65535.0),
    "I;16B": (0.0, 65535.0),
    "I": (-1_000_000.0, 5_000_000.0),
    "F": (-0.5, 1.5),
}

_FRAME_COLOURS = ((220, 30, 30), (30, 200, 30), (30, 30, 220))


def image_pattern(size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """Return the seeded RGB pattern (H, W, 3 uint8) that every image factory starts from."""
    width, height = size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(-(-height // 8), -(-width // 8), 3))
    noise = blocks.repeat(8, axis=0).repeat(8, axis=1)[:height, :width]
    # A gradient in a seed-chosen direction and colour gives large-scale structure.
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    colour = rng.integers(64, 256, size=3)
    pixels = 0.5 * noise + 0.5 * ramp[..., None] * colour
    return np.asarray(np.clip(pixels, 0, 255), dtype=np.uint8)


def alpha_mask(size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Return the (H, W) uint8 alpha used by transparent images: left quarter 0, rest 255."""
    width, height = size
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, : width // 4] = 0
    return alpha


def high_bit_values(mode: str, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """Return the pixel values of a high-bit-depth image, spanning HIGH_BIT_RANGES[mode]."""
    lum = image_pattern(size, seed).astype(np.float64).mean(axis=2)
    unit = (lum - lum.min()) / (lum.max() - lum.min())
    low, high = HIGH_BIT_RANGES[mode]
    values = low + unit * (high - low)
    dtype = {"I;16": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32}[mode]
    return np.asarray(np.rint(values) if dtype is not np.float32 else values, dtype=dtype)


def _rgb(size: tuple[int, int], seed: int) -> Image.Image:
    """Return the pattern as an RGB image."""
    return Image.fromarray(image_pattern(size, seed))


def _palette(size: tuple[int, int], seed: int, transparent: bool) -> Image.Image:
    """Return a P image; with transparent, index 0 is transparent black on the left quarter."""
    quantised = _rgb(size, seed).quantize(colors=255)
    indices = np.asarray(quantised, dtype=np.uint8)
    palette = quantised.getpalette() or []
    if transparent:
        indices = indices + 1
        indices[alpha_mask(size) == 0] = 0
        palette = [0, 0, 0, *palette[: 255 * 3]]
    image = Image.frombytes("P", size, indices.tobytes())
    image.putpalette(palette)
    if transparent:
        image.info["transparency"] = 0
    return image


def _with_alpha(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Return an LA, RGBA or PA image carrying alpha_mask(); its transparent pixels are black."""
    mask = alpha_mask(size)
    if mode == "PA":
        # Transparent P already puts black palette index 0 under the mask; move it to alpha.
        image = _palette(size, seed, transparent=True)
        del image.info["transparency"]
        image = image.convert("PA")
        image.putalpha(Image.fromarray(mask))
        return image
    base = np.asarray(_rgb(size, seed).convert(mode[:-1])).copy()
    base[mask == 0] = 0
    return Image.fromarray(np.dstack([base, mask]))


def _image_in_mode(mode: str, size: tuple[int, int], seed: int, transparent: bool) -> Image.Image:
    """Build the in-memory image for one Pillow mode."""
    if mode in HIGH_BIT_RANGES:
        values = high_bit_values(mode, size, seed)
        if mode == "I;16B":
            return Image.frombytes("I;16B", size, values.astype(">u2").tobytes())
        return Image.fromarray(values)
    if mode == "P":
        return _palette(size, seed, transparent)
    if mode in ("LA", "RGBA", "PA"):
        return _with_alpha(mode, size, seed)
    return _rgb(size, seed).convert(mode)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode an image with Pillow and return the bytes."""
    buffer = io.BytesIO()
    if "transparency" in image.info:
        params.setdefault("transparency", image.info["transparency"])
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def image_bytes(
    mode: str,
    *,
    size: tuple[int, int] = IMAGE_SIZE,
    fmt: str | None = None,
    seed: int = 0,
    transparent: bool = False,
) -> bytes:
    """Return an encoded non-uniform image in a Pillow mode (transparent applies to P)."""
    image = _image_in_mode(mode, size, seed, transparent)
    return _save(image, fmt or _DEFAULT_FORMAT[mode])


def animated_bytes(fmt: str = "GIF", *, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> bytes:
    """Return a 3-frame animation (GIF, PNG = APNG, WEBP); frames are red, green, blue."""
    pattern = image_pattern(size, seed).astype(np.float64)
    frames = [
        Image.fromarray(np.asarray(0.8 * np.array(colour) + 0.2 * pattern, dtype=np.uint8))
        for colour in _FRAME_COLOURS
    ]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_gif_bytes(*, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> bytes:
    """Return a 3-frame animated GIF whose frames are red, green, blue."""
    return animated_bytes("GIF", size=size, seed=seed)


def exif_rotated_jpeg_bytes(*, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> bytes:
    """Return a JPEG stored as size with EXIF Orientation 6 (displayed rotated 90 degrees CW)."""
    pixels = image_pattern(size, seed)
    pixels[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer must rotate 90 degrees clockwise
    return _save(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """Return one PNG chunk: length, type, body, CRC."""
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_header_bytes(width: int, height: int) -> bytes:
    """Return a PNG whose header claims width x height but whose pixel data is a few junk bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"\x00not deflate data")
        + _png_chunk(b"IEND", b"")
    )


def truncated(data: bytes) -> bytes:
    """Return the first half of a file, as a cut-off upload would arrive."""
    return data[: len(data) // 2]


_IMAGE_CASES: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "rgb_jpeg": ("JPEG", lambda seed: image_bytes("RGB", fmt="JPEG", seed=seed)),
    "rgb_png": ("PNG", lambda seed: image_bytes("RGB", seed=seed)),
    "l_png": ("PNG", lambda seed: image_bytes("L", seed=seed)),
    "1_png": ("PNG", lambda seed: image_bytes("1", seed=seed)),
    "p_png": ("PNG", lambda seed: image_bytes("P", seed=seed)),
    "p_transparent_png": ("PNG", lambda seed: image_bytes("P", seed=seed, transparent=True)),
    "p_transparent_gif": (
        "GIF",
        lambda seed: image_bytes("P", fmt="GIF", seed=seed, transparent=True),
    ),
    "la_png": ("PNG", lambda seed: image_bytes("LA", seed=seed)),
    "rgba_png": ("PNG", lambda seed: image_bytes("RGBA", seed=seed)),
    "pa_tiff": ("TIFF", lambda seed: image_bytes("PA", seed=seed)),
    "cmyk_jpeg": ("JPEG", lambda seed: image_bytes("CMYK", seed=seed)),
    "cmyk_tiff": ("TIFF", lambda seed: image_bytes("CMYK", fmt="TIFF", seed=seed)),
    "ycbcr_tiff": ("TIFF", lambda seed: image_bytes("YCbCr", seed=seed)),
    "i16_png": ("PNG", lambda seed: image_bytes("I;16", seed=seed)),
    "i16b_tiff": ("TIFF", lambda seed: image_bytes("I;16B", seed=seed)),
    "i32_tiff": ("TIFF", lambda seed: image_bytes("I", seed=seed)),
    "f_tiff": ("TIFF", lambda seed: image_bytes("F", seed=seed)),
    "animated_gif": ("GIF", lambda seed: animated_gif_bytes(seed=seed)),
    "apng": ("PNG", lambda seed: animated_bytes("PNG", seed=seed)),
    "animated_webp": ("WEBP", lambda seed: animated_bytes("WEBP", seed=seed)),
    "webp": ("WEBP", lambda seed: image_bytes("RGB", fmt="WEBP", seed=seed)),
    "rgba_webp": ("WEBP", lambda seed: image_bytes("RGBA", fmt="WEBP", seed=seed)),
    "bmp": ("BMP", lambda seed: image_bytes("RGB", fmt="BMP", seed=seed)),
    "exif_rotated_jpeg": ("JPEG", lambda seed: exif_rotated_jpeg_bytes(seed=seed)),
}

# Case names the decoder and API tests iterate over.
IMAGE_MODES: tuple[str, ...] = tuple(_IMAGE_CASES)

# Cases whose left quarter is transparent and must come out white.
TRANSPARENT_IMAGE_CASES: tuple[str, ...] = (
    "p_transparent_png",
    "p_transparent_gif",
    "la_png",
    "rgba_png",
    "pa_tiff",
    "rgba_webp",
)

# Cases holding three frames (red, green, blue); decoding keeps the first.
ANIMATED_IMAGE_CASES: tuple[str, ...] = ("animated_gif", "apng", "animated_webp")


def image_case(name: str, *, seed: int = 0) -> bytes:
    """Return the encoded bytes of one IMAGE_MODES case."""
    return _IMAGE_CASES[name][1](seed)


def image_case_format(name: str) -> str:
    """Return the Pillow format name of one IMAGE_MODES case (a key of IMAGE_CONTENT_TYPES)."""
    return _IMAGE_CASES[name][0]


def image_case_size(name: str) -> tuple[int, int]:
    """Return the (width, height) a case decodes to: EXIF rotation swaps the stored size."""
    width, height = IMAGE_SIZE
    return (height, width) if name == "exif_rotated_jpeg" else (width, height)


# --- audio ---
#
# Every clip is a sine tone (the same in every channel) unless silent. Conventions:
# - files are written with soundfile into memory, in blocks: one large Vorbis write can
#   crash libsndfile 1.2.2 (seen at 60 s of 48 kHz in one call);
# - libsndfile writes MP3 at 8, 11.025, 12, 16, 22.05, 24, 32, 44.1 and 48 kHz only, mono or
#   stereo only; use WAV or FLAC for 96 kHz or more than two channels;
# - an empty FLAC or MP3 comes out as zero bytes (libsndfile writes nothing without samples);
#   only WAV and OGG give a valid header holding 0 frames.

AUDIO_FORMATS = ("WAV", "FLAC", "OGG", "MP3")

_AUDIO_SUBTYPES: dict[str, str | None] = {
    "WAV": None,
    "FLAC": None,
    "OGG": "VORBIS",
    "MP3": "MPEG_LAYER_III",
}

_WRITE_BLOCK = 16_384


def tone(
    seconds: float = 1.0,
    *,
    rate: int = 16000,
    freq: float = 440.0,
    channels: int = 1,
    amplitude: float = 0.5,
) -> np.ndarray:
    """Return a sine tone as (frames, channels) float32, the same signal in every channel."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1)


def audio_bytes(
    fmt: str = "WAV",
    *,
    seconds: float = 1.0,
    rate: int = 16000,
    channels: int = 1,
    freq: float = 440.0,
    silent: bool = False,
    subtype: str | None = None,
) -> bytes:
    """Return an encoded tone (or silence) in one of AUDIO_FORMATS, written with soundfile."""
    samples = tone(seconds, rate=rate, freq=freq, channels=channels)
    if silent:
        samples[:] = 0.0
    return samples_bytes(samples, rate, fmt, subtype=subtype)


def samples_bytes(
    samples: np.ndarray, rate: int, fmt: str = "WAV", *, subtype: str | None = None
) -> bytes:
    """Encode (frames, channels) samples with soundfile; subtype defaults per format."""
    buffer = io.BytesIO()
    chosen = subtype or _AUDIO_SUBTYPES[fmt]
    with sf.SoundFile(buffer, "w", rate, samples.shape[1], format=fmt, subtype=chosen) as out:
        for start in range(0, len(samples), _WRITE_BLOCK):
            out.write(samples[start : start + _WRITE_BLOCK])
    return buffer.getvalue()


def wav_with_lying_header(claimed_seconds: float, *, rate: int = 16000) -> bytes:
    """Return a 16-bit mono WAV whose data chunk claims claimed_seconds but holds 0.1 s."""
    pcm = (tone(0.1, rate=rate)[:, 0] * 32767).astype("<i2").tobytes()
    # RIFF sizes are 32-bit; 0xFFFFFFFF means "unknown" to readers, so stop just below it.
    claimed = min(round(claimed_seconds * rate) * 2, 0xFFFFFFFE)
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16)
    data_head = struct.pack("<4sI", b"data", claimed)
    riff_size = min(4 + len(fmt_chunk) + len(data_head) + claimed, 0xFFFFFFFE)
    return struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE") + fmt_chunk + data_head + pcm


def services_of(client: Any) -> Services:
    """The running app's services (a TestClient's app, lifespan entered)."""
    services: Services = client.app.state.services
    return services


def add_text(client: Any, collection: str, item_id: str) -> Any:
    """POST a text item whose text and metadata name ``item_id``."""
    body = {"id": item_id, "text": f"text of {item_id}", "metadata": {"key": item_id}}
    return client.post(f"/v1/collections/{collection}/items", json=body)


def found_text(client: Any, collection: str, item_id: str) -> bool:
    """Whether a search by the text ``add_text`` gave finds exactly that item first."""
    body = {"text": f"text of {item_id}", "k": 1, "filter": {"key": item_id}}
    r = client.post(f"/v1/collections/{collection}/search", json=body)
    assert r.status_code == 200, r.text
    return [h["item"]["id"] for h in r.json()["results"]] == [item_id]


# --- stored rows (the stores of index/, without the app) ---


def new_collection(stores: Stores, name: str = "c") -> CollectionRow:
    """A 4-dimensional collection whose first aligner is the identity."""
    aligner = Aligner.identity(4, {"image": "m", "text": "m"})
    return stores.collections.create(
        name=name,
        model="m",
        audio_model=None,
        dim=4,
        index_type="flat",
        index_params={},
        aligner=aligner.to_bytes(),
        aligner_meta=aligner.meta,
    )


def item_draft(external_id: str, metadata: dict[str, Any] | None = None) -> ItemDraft:
    """A text item of ``new_collection``'s space (vector = feature, aligner version 0)."""
    vector = np.ones(4, dtype=np.float32) / 2
    return ItemDraft(
        external_id=external_id,
        modality="text",
        sha256="0" * 64,
        content_type="text/plain",
        size_bytes=1,
        feature=vector,
        vector=vector,
        aligner_version=0,
        text="x",
        metadata=metadata or {},
    )
