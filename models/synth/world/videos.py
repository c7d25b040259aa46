"""Video files from frames and a wave (MP4, QuickTime, Matroska or WebM, encoded with PyAV),
and world videos: shapes that appear, move and leave, and sounds, at known times.

The encoders used are those PyAV's own FFmpeg build carries everywhere: MPEG-4 part 2 video
with AAC audio (MP4, QuickTime, Matroska), VP8 with Opus (WebM).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import av
import numpy as np

from models.synth.world.images import Scene, render_scene
from models.synth.world.sounds import Sound, synthesize
from models.synth.world.vocabulary import Thing

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


def audio_only(data: bytes, container: str) -> bytes:
    """The first audio track of a video file alone, remuxed into ``container`` (an FFmpeg
    format name such as "mp4" or "matroska"): a file of a video container without video."""
    src = cast(av.container.InputContainer, av.open(io.BytesIO(data)))
    out = io.BytesIO()
    with src, av.open(out, "w", format=container) as dst:
        stream = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:  # the demuxer's last, empty packet
                packet.stream = stream
                dst.mux(packet)
    return out.getvalue()


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


@dataclass(frozen=True)
class VideoEvent:
    """Something that happens in a world video: a shape on screen or a sound, from ``start``
    to ``end`` seconds."""

    thing: Thing
    start: float
    end: float

    @property
    def modality(self) -> str:
        """``image`` for a shape on screen, ``audio`` for a sound."""
        return "audio" if "kind" in self.thing.objects[0] else "image"


@dataclass(frozen=True)
class WorldVideo:
    """A generated video and the events in it, at known times."""

    data: bytes
    duration: float
    events: tuple[VideoEvent, ...]


def world_video(
    scenes: Sequence[Scene],
    sounds: Sequence[Sound],
    *,
    seed: int,
    container: str = "mp4",
    fps: int = 10,
    side: int = 128,
    rate: int = 16_000,
    hiss: float = 0.003,
) -> WorldVideo:
    """A video in which each scene's shapes appear in turn, move across the picture (left,
    centre, right) and leave, with empty moments between them, and each sound plays once at
    a drawn time over a quiet hiss. Pictures come from the "shifted" renderer and sounds from
    the "shifted" synthesiser, which mmr-mini never trained on."""
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    events: list[VideoEvent] = []

    def hold(picture: np.ndarray, seconds: float) -> None:
        frames.extend([picture] * max(1, round(seconds * fps)))

    for n, scene in enumerate(scenes):
        look = int(rng.integers(2**31))  # one backdrop and size for the three positions
        shots = []
        for position in ("left", "center", "right"):
            moved = Scene(objects=tuple({**o, "position": position} for o in scene.objects))
            image = render_scene(moved, np.random.default_rng(look), style="shifted", clean=True)
            shots.append(np.asarray(image.convert("RGB").resize((side, side))))
        # The empty backdrop (the corner's colour: clean renders are plain) before and after.
        empty = np.empty_like(shots[0])
        empty[:] = shots[0][0, 0]
        hold(empty, rng.uniform(1.0, 2.0) if n == 0 else rng.uniform(0.3, 0.8))
        start = len(frames) / fps
        for shot in shots:
            hold(shot, rng.uniform(0.8, 1.3))
        events.append(VideoEvent(scene, start, len(frames) / fps))
        hold(empty, rng.uniform(0.5, 1.0))
    duration = len(frames) / fps
    wave = rng.normal(0, hiss, round(duration * rate)).astype(np.float32)
    slots = np.linspace(0, duration, len(sounds) + 1)
    for sound, lo, hi in zip(sounds, slots[:-1], slots[1:], strict=True):
        clip, _ = synthesize(sound, rng, style="shifted", sample_rate=rate)
        clip = clip[: max(1, round((hi - lo) * rate) - 1)]
        at = round(rng.uniform(lo, hi - len(clip) / rate) * rate)
        wave[at : at + len(clip)] += clip
        events.append(VideoEvent(sound, at / rate, (at + len(clip)) / rate))
    data = encode_video(frames, fps=fps, wave=wave, rate=rate, container=container)
    return WorldVideo(data, duration, tuple(events))


def event_query(event: VideoEvent) -> str:
    """A text about one event, in the world's words: "a red circle", "two high beeps"."""
    attrs = event.thing.objects[0]
    if event.modality == "image":
        colour = attrs["colour"]
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {attrs['shape']}"
    # "the sound of": the world's own caption prefix, and "white noise" is no white thing.
    if attrs["kind"] == "noise":
        return "the sound of white noise"
    words = [attrs[k] for k in ("count", "pitch", "direction", "kind") if k in attrs]
    return "the sound of " + ("" if "count" in attrs else "a ") + " ".join(words)
