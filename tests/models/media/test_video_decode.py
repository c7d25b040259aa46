"""decode_video: every container, scene sampling, limits on what decodes, broken files."""

from __future__ import annotations

import functools
import io
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from models.media import video as video_module
from models.media.budget import MB, DecodeBudget, RequestBudget
from models.media.scenes import FrameSampler
from models.media.video import DecodedVideo, VideoLimits, decode_video, frame_at, sniff_video
from models.synth.world.videos import CONTAINERS, VIDEO_CONTENT_TYPES, audio_only, encode_video

RATE = 16_000
FPS = 10
LIMITS = VideoLimits(
    max_seconds=60,
    max_frames=10_000,
    max_pixels=10**7,
    decode_seconds=30,
    sample_frames=16,
    max_interval_s=10.0,
)
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> np.ndarray:
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    frame[:] = colour
    return frame


def scenes(*parts: tuple[tuple[int, int, int], float], size: tuple[int, int] = (64, 48)) -> list:
    """Frames at FPS: each (colour, seconds) part in turn."""
    return [solid(c, size) for c, s in parts for _ in range(round(s * FPS))]


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@functools.cache
def three_scenes(container: str = "mp4", audio: bool = True) -> bytes:
    """Red 0-1 s, green 1-2.5 s, blue 2.5-5 s, a 440 Hz tone throughout."""
    frames = scenes((RED, 1.0), (GREEN, 1.5), (BLUE, 2.5))
    return encode_video(frames, fps=FPS, wave=tone(5.0) if audio else None, container=container)


def decode(data: bytes, limits: VideoLimits = LIMITS, **kw: object) -> DecodedVideo:
    kw.setdefault("frame_side", 32)
    kw.setdefault("audio_rate", RATE)
    return decode_video(data, limits=limits, **kw)  # type: ignore[arg-type]


def with_limits(**changes: object) -> VideoLimits:
    return VideoLimits(**{**LIMITS.__dict__, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_each_container_decodes_to_scenes_and_audio(container: str) -> None:
    video = decode(three_scenes(container))
    assert video.mime == VIDEO_CONTENT_TYPES[container]
    assert sniff_video(three_scenes(container)) == video.mime
    # One kept frame per scene, each standing for its scene's span.
    starts = video.frame_spans[:, 0]
    assert starts == pytest.approx([0.0, 1.0, 2.5], abs=0.11)
    assert video.frame_spans[-1, 1] == pytest.approx(video.duration)
    assert video.duration == pytest.approx(5.0, abs=0.1)
    colours = [img.getpixel((5, 5)) for img in video.frames]
    for got, want in zip(colours, (RED, GREEN, BLUE), strict=True):
        assert np.abs(np.subtract(got, want)).max() < 20
    assert video.audio is not None and video.audio.dtype == np.float32
    assert len(video.audio) / RATE == pytest.approx(5.0, abs=0.1)
    spectrum = np.abs(np.fft.rfft(video.audio))
    assert np.argmax(spectrum) * RATE / len(video.audio) == pytest.approx(440, abs=5)


def test_frames_are_shrunk_to_the_side_asked_keeping_their_aspect() -> None:
    data = encode_video(scenes((RED, 0.5), size=(320, 160)), fps=FPS)
    video = decode(data, frame_side=40)
    assert video.frames[0].size == (80, 40)


def test_a_one_frame_video_lasts_one_frame() -> None:
    video = decode(encode_video([solid(RED)], fps=FPS))
    assert video.duration == pytest.approx(1 / FPS)
    assert video.frame_spans.tolist() == [[0.0, pytest.approx(1 / FPS)]]


def test_no_audio_asked_or_present_gives_no_wave() -> None:
    assert decode(three_scenes(), audio_rate=None).audio is None
    assert decode(three_scenes(audio=False)).audio is None


def test_a_still_video_is_sampled_every_max_interval() -> None:
    data = encode_video(scenes((RED, 5.0)), fps=FPS)
    video = decode(data, with_limits(max_interval_s=1.0))
    assert video.frame_spans[:, 0] == pytest.approx([0, 1, 2, 3, 4], abs=0.01)


def test_past_the_cap_the_least_changed_frames_merge_and_spans_still_cover_the_video() -> None:
    # Ten scenes, alternating between two colours far apart and two close ones.
    parts = [((200, 30, 30) if i % 2 else (30, 30, 200), 0.5) for i in range(10)]
    video = decode(encode_video(scenes(*parts), fps=FPS), with_limits(sample_frames=4))
    assert len(video.frames) == 4
    assert video.frame_spans[0, 0] == 0.0
    assert (video.frame_spans[1:, 0] == video.frame_spans[:-1, 1]).all()
    assert video.frame_spans[-1, 1] == pytest.approx(video.duration)


@given(
    changes=st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=200),
    cap=st.integers(1, 12),
    interval=st.floats(0.05, 5, allow_subnormal=False),
)
def test_sampler_keeps_the_first_frame_in_order_and_at_most_cap(
    changes: list[float], cap: int, interval: float
) -> None:
    sampler = FrameSampler(cap, interval)
    for n, level in enumerate(changes):
        if sampler.offer(n * 0.1, np.full((4, 4), level * 255, np.uint8)):
            sampler.attach(object())  # type: ignore[arg-type]
    times, images = sampler.result()
    assert times[0] == 0.0
    assert len(times) == len(images) <= cap
    assert times == sorted(times)


def test_limits_are_checked_on_what_decodes() -> None:
    data = three_scenes()
    with pytest.raises(MediaTooLargeError, match="MMR_MAX_VIDEO_SECONDS"):
        decode(data, with_limits(max_seconds=3.0))
    with pytest.raises(MediaTooLargeError, match="MMR_MAX_VIDEO_FRAMES"):
        decode(data, with_limits(max_frames=20))
    with pytest.raises(MediaTooLargeError, match="MMR_MAX_VIDEO_PIXELS"):
        decode(data, with_limits(max_pixels=64 * 47))
    with pytest.raises(MediaTooLargeError, match="MMR_VIDEO_DECODE_SECONDS"):
        decode(data, with_limits(decode_seconds=0.0))


def test_the_decode_time_limit_stops_a_decode_in_the_middle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encode_video(scenes((RED, 15.0), (BLUE, 15.0)), fps=FPS, wave=tone(30.0))
    decoded: list[int] = []
    real = video_module._Decoder._video_frame

    def slow_frame(self: video_module._Decoder, frame: av.VideoFrame) -> None:
        time.sleep(0.01)  # 300 frames: 3 s at least to decode them all
        decoded.append(1)
        real(self, frame)

    monkeypatch.setattr(video_module._Decoder, "_video_frame", slow_frame)
    started = time.monotonic()
    with pytest.raises(MediaTooLargeError, match="MMR_VIDEO_DECODE_SECONDS"):
        decode(data, with_limits(decode_seconds=0.5))
    assert time.monotonic() - started < 1.5
    assert 10 <= len(decoded) <= 150  # it started, and stopped well before the end


def test_a_long_audio_track_counts_against_the_seconds_limit() -> None:
    data = encode_video(scenes((RED, 1.0)), fps=FPS, wave=tone(8.0), container="mkv")
    with pytest.raises(MediaTooLargeError, match="MMR_MAX_VIDEO_SECONDS"):
        decode(data, with_limits(max_seconds=5.0))
    assert decode(data).duration == pytest.approx(8.0, abs=0.1)


def test_a_decode_and_a_frame_at_a_moment_use_a_bounded_number_of_ffmpeg_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts: list[int] = []
    run, frame = video_module._Decoder.run, video_module._frame_at

    def spy_run(self: object, container: object, video: av.video.stream.VideoStream) -> object:
        counts.append(video.codec_context.thread_count)
        return run(self, container, video)  # type: ignore[arg-type]

    def spy_frame(container: object, video: av.video.stream.VideoStream, *a: object) -> object:
        counts.append(video.codec_context.thread_count)
        return frame(container, video, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(video_module._Decoder, "run", spy_run)
    monkeypatch.setattr(video_module, "_frame_at", spy_frame)
    for container in CONTAINERS:
        decode(three_scenes(container))
        frame_at(three_scenes(container), 3.0, limits=LIMITS, side=32, seconds=5)
    # FFmpeg's default (0) is a thread per core, per decode.
    assert counts and all(1 <= n <= video_module.DECODE_THREADS <= 2 for n in counts), counts


def test_the_request_budget_holds_the_decoded_frames_and_audio() -> None:
    process = DecodeBudget(64 * MB, wait_s=0.1)
    video = decode(three_scenes(), budget=RequestBudget(process, 64 * MB))
    assert process.used == video.nbytes  # kept while the decoded video lives
    del video
    assert process.used == 0
    with pytest.raises(MediaTooLargeError):
        decode(three_scenes(), budget=RequestBudget(process, 1024))
    assert process.used == 0


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6])
def test_a_cut_off_file_is_refused(container: str, keep: float) -> None:
    data = three_scenes(container)
    with pytest.raises(UnsupportedMediaError, match=r"cut off|damaged"):
        decode(data[: int(len(data) * keep)])


def held_last_frame(container: str, hold_s: float = 6.0) -> bytes:
    """A frame a second for 0-4 s, the last one held ``hold_s`` seconds (variable rate)."""
    muxer, vcodec, _ = CONTAINERS[container]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as out:
        stream = out.add_stream(vcodec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        packets = []
        for i, colour in enumerate((RED, GREEN, BLUE, RED, GREEN)):
            frame = av.VideoFrame.from_ndarray(solid(colour), format="rgb24")
            frame.pts, frame.time_base = i * FPS, Fraction(1, FPS)
            packets += stream.encode(frame)
        packets += stream.encode(None)
        packets[-1].duration = int(hold_s / packets[-1].time_base)
        for packet in packets:
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_a_still_frame_over_a_longer_sound_is_whole_without_ears(container: str) -> None:
    data = encode_video([solid(RED)], fps=FPS, wave=tone(10.0), container=container)
    video = decode(data, audio_rate=None)
    assert video.audio is None and len(video.frames) == 1
    assert decode(data).duration == pytest.approx(10.0, abs=0.1)  # with ears, the sound's


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_a_last_frame_held_lasts_until_its_packet_ends(container: str) -> None:
    video = decode(held_last_frame(container), audio_rate=None)
    assert video.duration == pytest.approx(10.0, abs=0.15)
    assert video.frame_spans[-1, 1] == pytest.approx(video.duration)


@pytest.mark.parametrize("container", ["mkv", "webm"])
def test_a_cut_off_file_is_refused_though_its_sound_is_not_decoded(container: str) -> None:
    data = encode_video(scenes((RED, 5.0)), fps=FPS, wave=tone(5.0), container=container)
    with pytest.raises(UnsupportedMediaError, match="cut off"):
        decode(data[: int(len(data) * 0.6)], audio_rate=None)


def test_an_audio_only_file_is_refused_with_a_reason() -> None:
    data = encode_video(scenes((RED, 1.0)), fps=FPS, wave=tone(1.0))
    # Our own MP4 without its video track: same container, only the AAC stream.
    with pytest.raises(UnsupportedMediaError, match="no video stream"):
        decode(audio_only(data, "mp4"))


def test_sniffing() -> None:
    assert sniff_video(b"\x00\x00\x00\x18ftypheic" + bytes(20)) is None  # a HEIF still
    assert sniff_video(b"\x00\x00\x00\x18ftypisom" + bytes(20)) == "video/mp4"
    assert sniff_video(b"\x00\x00\x00\x14ftypqt  " + bytes(20)) == "video/quicktime"
    assert sniff_video(b"\x00\x00\x10\x00moov" + bytes(20)) == "video/quicktime"
    assert sniff_video(b"\x1a\x45\xdf\xa3" + bytes(60)) == "video/x-matroska"
    assert sniff_video(b"RIFF\x00\x00\x00\x00WAVE") is None
    with pytest.raises(UnsupportedMediaError, match="unsupported video type"):
        decode(b"hello world, not a video")


MAGICS = [b"\x00\x00\x00\x18ftypisom", b"\x00\x00\x00\x14ftypqt  ", b"\x1a\x45\xdf\xa3"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.sampled_from(MAGICS), tail=st.binary(max_size=4096))
def test_random_bytes_behind_a_magic_raise_only_media_errors(head: bytes, tail: bytes) -> None:
    with pytest.raises(MediaError):
        decode(head + tail)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    container=st.sampled_from(list(CONTAINERS)),
    cut=st.floats(0, 1, allow_subnormal=False),
    flips=st.lists(
        st.tuples(st.floats(0, 1, allow_subnormal=False), st.integers(0, 255)), max_size=12
    ),
)
def test_damaged_or_truncated_videos_decode_or_raise_a_media_error(
    container: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(three_scenes(container))
    for where, value in flips:
        data[min(len(data) - 1, int(where * len(data)))] = value
    try:
        video = decode(bytes(data[: max(1, int(cut * len(data)))]))
    except MediaError:
        return
    assert 1 <= len(video.frames) <= LIMITS.sample_frames
    assert 0 < video.duration <= LIMITS.max_seconds
    assert (np.diff(video.frame_spans[:, 0]) >= 0).all()
