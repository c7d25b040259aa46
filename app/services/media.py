"""Uploads to decoded media: sniff the type, refuse what the active model cannot take, and
hold every decode to the request's and the process's budgets of decoded bytes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.services.embedding import Embedder
from app.services.errors import TooLarge
from app.settings import Settings
from models.errors import UnsupportedMediaError
from models.media.audio import decode_audio, sniff_audio
from models.media.budget import MB, DecodeBudget, RequestBudget
from models.media.image import decode_image, sniff_image
from models.media.video import DecodedVideo, VideoLimits, decode_video, sniff_video

# How long a decode waits for room in a full process budget before its request gets 429.
DECODE_WAIT_S = 2.0


@dataclass
class DecodedMedia:
    """A decoded upload and what it is: an RGB image, a mono wave at the model's rate, or a
    video's sampled frames and sound."""

    modality: str
    content_type: str
    payload: Image.Image | np.ndarray | DecodedVideo


def request_budget(settings: Settings) -> RequestBudget:
    """A new request's budget of decoded bytes (MMR_MAX_DECODED_MB_PER_REQUEST), drawing on
    the process's (MMR_MAX_DECODED_MB): pass the same one to every decode of a request."""
    return RequestBudget(
        process_budget(int(settings.max_decoded_mb * MB)),
        int(settings.max_decoded_mb_per_request * MB),
        setting="MMR_MAX_DECODED_MB_PER_REQUEST",
    )


@functools.cache
def process_budget(capacity: int) -> DecodeBudget:
    """The process's one budget of decoded bytes (per capacity: apps built with other
    settings in one process, as tests do, each get theirs)."""
    return DecodeBudget(capacity, wait_s=DECODE_WAIT_S, setting="MMR_MAX_DECODED_MB")


def decode_upload(
    data: bytes, *, settings: Settings, embedder: Embedder, budget: RequestBudget | None = None
) -> DecodedMedia:
    """Decode an uploaded file by its bytes (never by its name or declared type) into what
    ``embedder`` takes, within ``budget`` (a request of its own when None)."""
    if len(data) > settings.max_upload_bytes:
        raise TooLarge(
            f"the file is over the {settings.max_upload_mb:g} MB limit (MMR_MAX_UPLOAD_MB)"
        )
    if not data:
        raise UnsupportedMediaError("the file is empty")
    budget = budget or request_budget(settings)
    mime = sniff_image(data)
    if mime is not None:
        # Decoded just large enough for the encoder's input, right away: JPEGs at a reduced DCT
        # scale of at least twice that, any image then averaged down to between twice and four
        # times that (the encoder's own resize then stays as sharp as from the full image).
        side = 2 * embedder.image_size
        image = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            min_side=side,
            shrink_to=side,
            budget=budget,
        )
        return DecodedMedia("image", mime, image)
    audio = sniff_audio(data)
    if audio is not None:
        return DecodedMedia("audio", audio, _decode_audio(data, audio, settings, embedder, budget))
    if sniff_video(data) is not None:
        video = decode_video(
            data,
            limits=video_limits(settings),
            frame_side=2 * embedder.image_size,
            audio_rate=embedder.audio_rate,  # None: the model has no ear, the sound is skipped
            budget=budget,
        )
        return DecodedMedia("video", video.mime, video)
    raise UnsupportedMediaError(
        "unsupported file type: send an image (JPEG, PNG, GIF, WebP, BMP, TIFF), a video "
        "(MP4, WebM, Matroska, QuickTime) or, with a model that has an audio tower, audio "
        "(WAV, FLAC, Ogg Vorbis, MP3)"
    )


def video_limits(settings: Settings) -> VideoLimits:
    """What one video may take to decode (the MMR_MAX_VIDEO_* and MMR_VIDEO_* settings)."""
    return VideoLimits(
        max_seconds=settings.max_video_seconds,
        max_frames=settings.max_video_frames,
        max_pixels=settings.max_video_pixels,
        decode_seconds=settings.video_decode_seconds,
        sample_frames=settings.video_sample_frames,
        max_interval_s=settings.video_frame_interval_s,
    )


def _decode_audio(
    data: bytes, mime: str, settings: Settings, embedder: Embedder, budget: RequestBudget
) -> np.ndarray:
    rate = embedder.audio_rate
    if rate is None:
        raise UnsupportedMediaError(
            f"this looks like audio ({mime}), but {embedder.model_id} has no audio model here "
            f"(it encodes {', '.join(embedder.modalities)}); for the server's own model enable "
            "audio with MMR_AUDIO_MODEL=clap:laion/clap-htsat-unfused (a CLAP bridged into "
            "this space, see docs/models.md, Audio) or run MMR_MODEL=mmr-mini, which has its "
            "own; a collection made without audio takes none (make one with audio, or migrate "
            "it with an audio_model)"
        )
    return decode_audio(
        data,
        target_rate=rate,
        max_seconds=settings.max_audio_seconds,
        budget=budget,
    )
