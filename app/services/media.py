"""Uploads to decoded media: sniff the type, refuse what the active model cannot take."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from app.errors import PayloadTooLarge
from app.state import Services
from models.errors import UnsupportedMediaError
from models.media.audio import sniff_audio
from models.media.image import decode_image, sniff_image


@dataclass
class DecodedMedia:
    """A decoded upload and what it is."""

    modality: str
    content_type: str
    image: Image.Image


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
        image = decode_image(data, max_pixels=settings.max_image_pixels)
        return DecodedMedia("image", mime, image)
    modalities = services.embedder.modalities
    audio = sniff_audio(data)
    if audio is not None and "audio" not in modalities:
        raise UnsupportedMediaError(
            f"this looks like audio ({audio}), but the active model has no audio tower "
            f"(it encodes {', '.join(modalities)}); choose a model with audio support"
        )
    raise UnsupportedMediaError(
        "unsupported file type: send a JPEG, PNG, GIF, WebP, BMP or TIFF image"
    )
