"""Video files from frames and a wave: MP4, QuickTime, Matroska or WebM, encoded with PyAV.

The encoders used are those PyAV's own FFmpeg build carries everywhere: MPEG-4 part 2 video
with AAC audio (MP4, QuickTime, Matroska), VP8 with Opus (WebM).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import cast

import av
import numpy as np

# Container -> (FFmpeg muxer, video encoder, audio encoder).
CONTAINERS = {
    "mp4": ("mp4", "mpeg4", "aac"),
    "mov": ("mov", "mpeg4", "aac"),
    "mkv": ("matroska", "mpeg4", "aac"),
    "webm": ("webm", "libvpx", "libopus"),
}
VIDEO_CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
}
_OPUS_RATE = 48_000  # the only input rate libopus takes here


def encode_video(
    frames: Iterable[np.ndarray],
    *,
    fps: int = 10,
    wave: np.ndarray | None = None,
    rate: int = 16_000,
    container: str = "mp4",
    bit_rate: int = 400_000,
) -> bytes:
    """Encode RGB uint8 frames (all one even-sided size) and, optionally, a mono float32
    wave at ``rate`` into a video file of the named ``container``."""
    muxer, vcodec, acodec = CONTAINERS[container]
    buffer = io.BytesIO()
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(buffer, "w", format=muxer) as out:
        video = cast(av.video.stream.VideoStream, out.add_stream(vcodec, rate=fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = bit_rate
        if wave is not None:
            _add_audio(out, wave, rate, acodec)
        for frame in (first, *frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
    return buffer.getvalue()


def _add_audio(out: av.container.OutputContainer, wave: np.ndarray, rate: int, codec: str) -> None:
    """Encode the whole wave into a new audio stream of ``out`` (muxed by timestamp)."""
    if codec == "libopus" and rate != _OPUS_RATE:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=_OPUS_RATE)
        frame = av.AudioFrame.from_ndarray(
            np.asarray(wave, np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = rate
        parts = [*resampler.resample(frame), *resampler.resample(None)]
        wave = np.concatenate([p.to_ndarray().reshape(-1) for p in parts])
        rate = _OPUS_RATE
    stream = cast(av.audio.stream.AudioStream, out.add_stream(codec, rate=rate))
    stream.layout = "mono"
    size = stream.codec_context.frame_size or 1024
    samples = np.asarray(wave, np.float32)
    fmt = stream.codec_context.format.name if stream.codec_context.format else "flt"
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        if len(chunk) < size:
            chunk = np.pad(chunk, (0, size - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        if fmt != "flt":
            frame = av.AudioResampler(format=fmt, layout="mono", rate=rate).resample(frame)[0]
            frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
