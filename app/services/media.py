"""Uploads to decoded media: sniff the type, refuse what the active model cannot take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.errors import PayloadTooLarge
from app.state import Services
from models.errors import UnsupportedMediaError
from models.media.audio import decode_audio, sniff_audio
from models.media.image import decode_image, sniff_image


@dataclass
class DecodedMedia:
    """A decoded upload and what it is: an RGB image or a mono wave at the model's rate."""

    modality: str
    content_type: str
    payload: Image.Image | np.ndarray


def decode_upload(data: bytes, *, services: Services) -> DecodedMedia:
    """Decode an uploaded file by its bytes (never by its name or declared type)."""
    settings = services.settings
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is over the {settings.max_upload_mb:g} MB limit (MMR_MAX_UPLOAD_MB)"
        )
    if not data:
        raise UnsupportedMediaError("the file is empty")
    mime = sniff_image(data)
    if mime is not None:
        # Twice the encoder's input: JPEGs decode at a reduced DCT scale, the resize stays sharp.
        min_side = 2 * services.embedder.image_size
        image = decode_image(data, max_pixels=settings.max_image_pixels, min_side=min_side)
        return DecodedMedia("image", mime, image)
    audio = sniff_audio(data)
    if audio is not None:
        return DecodedMedia("audio", audio, _decode_audio(data, audio, services))
    raise UnsupportedMediaError(
        "unsupported file type: send an image (JPEG, PNG, GIF, WebP, BMP, TIFF) or, with a "
        "model that has an audio tower, audio (WAV, FLAC, Ogg Vorbis, MP3)"
    )


def _decode_audio(data: bytes, mime: str, services: Services) -> np.ndarray:
    embedder = services.embedder
    rate = embedder.audio_rate
    if rate is None:
        raise UnsupportedMediaError(
            f"this looks like audio ({mime}), but this server has no audio model (it encodes "
            f"{', '.join(embedder.modalities)} with {embedder.model_id}); enable audio with "
            "MMR_AUDIO_MODEL=clap:laion/clap-htsat-unfused (a CLAP bridged into this space, "
            "see the README's Audio section) or run MMR_MODEL=mmr-mini, which has its own"
        )
    return decode_audio(data, target_rate=rate, max_seconds=services.settings.max_audio_seconds)
