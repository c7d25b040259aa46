"""Video decoding for uploads: MP4, WebM, Matroska and QuickTime through PyAV (FFmpeg).

A video becomes a few frames and its audio track. Frames are sampled by scene change: every
decoded frame is shrunk to a small thumbnail, and a frame is kept when it differs enough
from the last kept one, or when ``max_interval_s`` has passed since it; past ``max_frames``
kept frames, the one that changed least is merged into its predecessor. Each kept frame
stands for the moment from its time to the next kept frame's (its span). The audio track is
decoded to mono float32 at the audio path's rate.

Every limit is checked on what decodes, never on what the container claims: the seconds
(frame and sample timestamps), the frames decoded, each frame's pixels, the wall-clock time
the decode takes (checked between packets and on every read of the file, so a demuxer that
spins on a crafted file stops too), and the bytes it keeps (the request's budget).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from models.errors import MediaTooLargeError, UnsupportedMediaError
from models.media.budget import RequestBudget, Reservation
from models.media.scenes import THUMB_SIDE, FrameSampler

VIDEO_CONTENT_TYPES = ("video/mp4", "video/webm", "video/x-matroska", "video/quicktime")
_ACCEPTED = "send MP4, WebM, Matroska (MKV) or QuickTime (MOV) video"

# The demuxer each sniffed type is opened with: FFmpeg never probes for another format.
_DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
}
# ISO-BMFF brands of still images (HEIF, AVIF): an ``ftyp`` box, but not a video of ours.
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
# Top-level QuickTime atoms an old .mov without ``ftyp`` starts with.
_QT_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})

# What PyAV raises on damaged input; anything else out of a decode is our bug.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, EOFError)
_AUDIO_CHANNELS_MAX = 64
# FFmpeg threads one video decode uses (frame and slice threads together): bounded, not one
# per core, since several requests decode at once (invariant 5).
DECODE_THREADS = 2
# Bytes a decoder holds per pixel of the stream besides the frames we keep: reference frames
# (up to 16) and one frame in flight per thread, in YUV 4:2:0 (1.5 bytes each), and one RGB
# conversion.
_DECODER_BYTES_PER_PIXEL = (16 + DECODE_THREADS) * 1.5 + 3
# A file's packets must reach at least this share of the duration its container announces
# (less a little slack), else it was cut off or its header lies.
_MIN_PRESENT = 0.9
_CUT_SLACK_S = 0.5


@dataclass(frozen=True)
class VideoLimits:
    """What one video may take to decode (MMR_MAX_VIDEO_* settings)."""

    max_seconds: float
    max_frames: int  # frames decoded, all of them, not only the kept ones
    max_pixels: int  # width times height of one frame
    decode_seconds: float  # wall-clock time the whole decode may take
    sample_frames: int  # frames kept, at most
    max_interval_s: float  # longest time between two kept frames


@dataclass
class DecodedVideo:
    """A video's kept frames (RGB) with the span each stands for, its audio, its duration."""

    mime: str
    frames: list[Image.Image]
    frame_spans: np.ndarray  # (n, 2) seconds
    duration: float
    audio: np.ndarray | None = None  # mono float32 at the requested rate, when there is one

    @property
    def nbytes(self) -> int:
        """Bytes the decoded frames and audio hold."""
        pixels = sum(3 * f.width * f.height for f in self.frames)
        return pixels + (0 if self.audio is None else self.audio.nbytes)


def sniff_video(data: bytes) -> str | None:
    """MIME type of an MP4, QuickTime, WebM or Matroska file from its first bytes, else None."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if data[4:8] in _QT_ATOMS and int.from_bytes(data[:4], "big") >= 8:
        return "video/quicktime"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        # The EBML header names its DocType within its first few dozen bytes.
        return "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    return None


def decode_video(
    data: bytes,
    *,
    limits: VideoLimits,
    frame_side: int,
    audio_rate: int | None,
    budget: RequestBudget | None = None,
) -> DecodedVideo:
    """Decode a video into sampled RGB frames (shorter side at most ``frame_side``) and, with
    ``audio_rate``, its first audio track as mono float32 at that rate.

    Damaged, cut-off, empty or mislabelled files raise UnsupportedMediaError; a video over a
    limit (seconds, frames, pixels, decode time, decoded bytes) raises MediaTooLargeError.
    """
    mime = sniff_video(data)
    if mime is None:
        raise UnsupportedMediaError(f"unsupported video type; {_ACCEPTED}")
    deadline = _request_deadline(limits, budget)
    try:
        container = av.open(
            _TimedReader(data, deadline), mode="r", format=_DEMUXERS[mime], metadata_errors="ignore"
        )
    except _DECODE_ERRORS as exc:
        deadline.check()  # a demuxer stopped by the deadline fails to read: say why
        raise _undecodable(exc) from exc
    with container:
        return _decode(container, mime, limits, frame_side, audio_rate, budget, deadline)


def frame_at(
    data: bytes,
    t: float,
    *,
    limits: VideoLimits,
    side: int,
    seconds: float,
    budget: RequestBudget | None = None,
) -> Image.Image:
    """The RGB frame shown at ``t`` seconds (the first at or after it, else the last one),
    its longer side at most ``side``: a seek to the keyframe before ``t``, then a decode up to
    it, under the pixel limit, within ``seconds`` (MediaTooLargeError past them) and, with a
    ``budget``, with the decoder's frames reserved in it."""
    mime = sniff_video(data)
    if mime is None:
        raise UnsupportedMediaError(f"unsupported video type; {_ACCEPTED}")
    deadline = _Deadline(
        seconds,
        f"the video's frame at {t:.3f} s takes more than {seconds:g} s to decode (the time a "
        "frame of a video at a moment gets); play the video itself instead",
    )
    try:
        with av.open(
            _TimedReader(data, deadline), mode="r", format=_DEMUXERS[mime], metadata_errors="ignore"
        ) as container:
            if not container.streams.video:
                raise UnsupportedMediaError("the file holds no video stream")
            video = container.streams.video[0]
            _check_video_header(video, limits)
            _bound_threads(video)
            if budget is None:
                return _frame_at(container, video, t, limits, side, deadline)
            ctx = video.codec_context
            peak = int(_DECODER_BYTES_PER_PIXEL * ctx.width * ctx.height + 3 * side * side)
            with budget.reserve(peak, 0, "the video's frame"):
                return _frame_at(container, video, t, limits, side, deadline)
    except _DECODE_ERRORS as exc:
        deadline.check()
        raise _undecodable(exc) from exc


def _frame_at(
    container: av.container.InputContainer,
    video: av.video.stream.VideoStream,
    t: float,
    limits: VideoLimits,
    side: int,
    deadline: _Deadline,
) -> Image.Image:
    start = video.start_time or 0
    if t > 0 and video.time_base:
        container.seek(start + int(t / video.time_base), stream=video, backward=True)
    chosen: av.VideoFrame | None = None
    for decoded, frame in enumerate(container.decode(video), 1):
        deadline.check()
        if decoded > limits.max_frames:
            break
        if frame.width * frame.height > limits.max_pixels:
            raise _too_many_pixels(frame.width, frame.height, limits)
        chosen = frame
        at = (
            None
            if frame.pts is None or not video.time_base
            else (frame.pts - start) * video.time_base
        )
        if at is None or at + 1e-3 >= t:
            break
    if chosen is None:
        raise UnsupportedMediaError(f"no frame of the video could be decoded; {_ACCEPTED}")
    scale = min(1.0, side / max(chosen.width, chosen.height))
    width, height = max(1, round(chosen.width * scale)), max(1, round(chosen.height * scale))
    rgb = chosen.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
    return Image.fromarray(rgb.to_ndarray())


def _decode(
    container: av.container.InputContainer,
    mime: str,
    limits: VideoLimits,
    frame_side: int,
    audio_rate: int | None,
    budget: RequestBudget | None,
    deadline: _Deadline,
) -> DecodedVideo:
    if not container.streams.video:
        raise UnsupportedMediaError(
            "the file holds no video stream (an audio-only file?); send a video, or the audio "
            "as WAV, FLAC, Ogg Vorbis or MP3"
        )
    video = container.streams.video[0]
    tracks = [a for a in container.streams.audio if a.codec_context is not None]
    audio = tracks[0] if audio_rate and tracks else None
    _check_video_header(video, limits)
    _bound_threads(video)
    width, height = video.codec_context.width, video.codec_context.height
    kept_side = _kept_size(width, height, frame_side)
    decoder = _Decoder(mime, limits, kept_side, audio, audio_rate, deadline)
    if budget is None:
        return decoder.run(container, video)
    # The audio the container announces (a lie is caught as the wave grows past it).
    seconds = min(_claimed_seconds(container) or 0.0, limits.max_seconds)
    decoder.frame_bytes = int(
        limits.sample_frames * 3 * kept_side[0] * kept_side[1]
        + _DECODER_BYTES_PER_PIXEL * width * height
    )
    audio_bytes = 0 if audio is None or not audio_rate else int(4 * audio_rate * seconds)
    with budget.reserve(decoder.peak(audio_bytes), audio_bytes, "the video") as reservation:
        decoder.reservation = reservation
        decoder.audio_reserved = audio_bytes
        out = decoder.run(container, video)
        reservation.keep(out, out.nbytes, "the video")
        return out


def _check_video_header(video: av.video.stream.VideoStream, limits: VideoLimits) -> None:
    """Refuse a stream whose header already says it is too large or unusable."""
    ctx = video.codec_context
    if ctx is None:
        raise UnsupportedMediaError(
            f"the video stream's codec is unknown or not decoded here; re-encode it as H.264, "
            f"MPEG-4, VP8 or VP9; {_ACCEPTED}"
        )
    if ctx.width <= 0 or ctx.height <= 0:
        raise UnsupportedMediaError(
            f"the video stream has no valid frame size ({ctx.width}x{ctx.height}); the file is "
            f"damaged; {_ACCEPTED}"
        )
    if ctx.width * ctx.height > limits.max_pixels:
        raise _too_many_pixels(ctx.width, ctx.height, limits)


def _bound_threads(video: av.video.stream.VideoStream) -> None:
    """At most DECODE_THREADS FFmpeg threads for this stream (FFmpeg's default: one a core)."""
    video.thread_type = "AUTO"
    video.codec_context.thread_count = DECODE_THREADS


def _too_many_pixels(width: int, height: int, limits: VideoLimits) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"the video's frames are {width}x{height}, over the {limits.max_pixels} pixel limit "
        "(MMR_MAX_VIDEO_PIXELS); scale it down or raise the limit"
    )


def _kept_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Size of a kept frame: the shorter side at most ``side``, the aspect ratio kept (a
    panorama's longer side at most 8 times ``side``)."""
    scale = min(1.0, side / min(width, height), 8 * side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Decoder:
    """One pass over the packets of the video stream and the audio stream."""

    def __init__(
        self,
        mime: str,
        limits: VideoLimits,
        kept_size: tuple[int, int],
        audio: av.audio.stream.AudioStream | None,
        audio_rate: int | None,
        deadline: _Deadline,
    ) -> None:
        self.mime = mime
        self.limits = limits
        self.kept_size = kept_size
        self.audio = audio
        self.deadline = deadline
        self.sampler = FrameSampler(limits.sample_frames, limits.max_interval_s)
        # One scaler each, reused: a new one per frame (what VideoFrame.reformat makes) costs
        # more than decoding a small frame.
        self.thumbs = VideoReformatter()
        self.shrink = VideoReformatter()
        self.frames = 0
        self.t0: float | None = None
        self.last_t = 0.0
        self.sound = (
            _AudioCollector(audio_rate, limits) if audio is not None and audio_rate else None
        )
        self.reservation: Reservation | None = None
        self.frame_bytes = 0  # the kept frames at most, and the decoder's own frames
        self.audio_reserved = 0
        self.nominal_step = 0.0
        self.video_stream: av.video.stream.VideoStream | None = None
        self.packets_end = -math.inf  # seconds on the container's clock
        self.video_end = -math.inf

    def peak(self, audio_bytes: int) -> int:
        """Bytes the decode holds at most with ``audio_bytes`` of wave: the frames, and the
        wave twice (its chunks and the array they are joined into)."""
        return self.frame_bytes + 2 * audio_bytes

    def run(
        self, container: av.container.InputContainer, video: av.video.stream.VideoStream
    ) -> DecodedVideo:
        # Every audio track is demuxed, decoded or not: the container's duration counts the
        # longest track, and a file is whole when its packets reach that far.
        streams = [video, *container.streams.audio]
        rate = video.average_rate
        if rate is not None and 0 < float(rate) <= 1000:
            self.nominal_step = 1 / float(rate)  # a still's one frame lasts this long
        self.video_stream = video
        try:
            for packet in container.demux(streams):
                self.deadline.check()
                self._reached(packet)
                if packet.stream is not video and packet.stream is not self.audio:
                    continue
                for frame in packet.decode():
                    self.deadline.check()
                    if isinstance(frame, av.VideoFrame):
                        self._video_frame(frame)
                    elif isinstance(frame, av.AudioFrame) and self.sound is not None:
                        self.sound.add(frame)
                        self._grow(4 * self.sound.total)
        except _DECODE_ERRORS as exc:
            self.deadline.check()
            if self.frames == 0:
                raise _undecodable(exc) from exc
            # A packet damaged near the end: what decoded before stays (players do the
            # same), unless too little came out (checked in _result).
        if self.frames == 0:
            raise UnsupportedMediaError(
                "no frame of the video could be decoded (the file is empty, cut off or "
                f"damaged); {_ACCEPTED}"
            )
        self.deadline.check()
        return self._result(_claimed_seconds(container), _start_seconds(container))

    def _reached(self, packet: av.Packet) -> None:
        """Note how far the packets reach: the end (time plus length) of the furthest, of all
        and of the video's (a last frame held for seconds ends where its packet does)."""
        at = packet.pts if packet.pts is not None else packet.dts
        if at is None or not packet.time_base:
            return
        end = float((at + max(packet.duration or 0, 0)) * packet.time_base)
        if math.isfinite(end):
            self.packets_end = max(self.packets_end, end)
            if packet.stream is self.video_stream:
                self.video_end = max(self.video_end, end)

    def _grow(self, audio_bytes: int) -> None:
        """Reserve more when the wave outgrows what the container announced."""
        if self.reservation is not None and audio_bytes > self.audio_reserved:
            self.audio_reserved = max(audio_bytes, 2 * self.audio_reserved)
            what = "the video's audio, longer than its container announced"
            self.reservation.resize(self.peak(self.audio_reserved), what)

    def _video_frame(self, frame: av.VideoFrame) -> None:
        self.frames += 1
        if self.frames > self.limits.max_frames:
            raise MediaTooLargeError(
                f"the video decodes to more than {self.limits.max_frames} frames "
                "(MMR_MAX_VIDEO_FRAMES); cut it or raise the limit"
            )
        if frame.width * frame.height > self.limits.max_pixels:
            raise _too_many_pixels(frame.width, frame.height, self.limits)
        t = self._time(frame)
        thumb = self.thumbs.reformat(frame, width=THUMB_SIDE, height=THUMB_SIDE, format="rgb24")
        if self.sampler.offer(t, thumb.to_ndarray()):
            w, h = self.kept_size
            rgb = self.shrink.reformat(
                frame, width=w, height=h, format="rgb24", interpolation="AREA"
            )
            self.sampler.attach(Image.fromarray(rgb.to_ndarray()))

    def _time(self, frame: av.VideoFrame) -> float:
        """The frame's time from the first frame, never going back (lying timestamps)."""
        t = frame.time
        if t is None or not math.isfinite(t):
            t = self.last_t
        if self.t0 is None:
            self.t0 = t
        t = max(self.last_t, t - self.t0)
        if t > self.limits.max_seconds:
            raise _too_long(self.limits)
        self.last_t = t
        return t

    def _result(self, claimed: float | None, start: float) -> DecodedVideo:
        audio = self.sound.finish() if self.sound is not None else None
        # The last frame lasts one frame interval (the mean one: timestamps may lie), or as
        # long as its packet says it is held.
        step = self.last_t / (self.frames - 1) if self.frames > 1 else self.nominal_step
        duration = max(self.last_t + step, self.video_end - (self.t0 or 0.0))
        if audio is not None and self.sound is not None:
            duration = max(duration, len(audio) / self.sound.rate)
        if duration > self.limits.max_seconds:
            raise _too_long(self.limits)
        # What the packets of every track reach, not what decodes: a track left undecoded
        # (no ears) or a held last frame still counts, a cut-off file does not reach its end.
        present = max(duration, self.packets_end - start)
        if claimed is not None and present < _MIN_PRESENT * claimed - _CUT_SLACK_S:
            raise UnsupportedMediaError(
                f"the video is cut off or its header is wrong: it announces {claimed:.2f} s but "
                f"only {present:.2f} s are in the file; upload the complete file"
            )
        times, images = self.sampler.result()
        ends = [*times[1:], max(duration, times[-1])]
        spans = np.array([[a, b] for a, b in zip(times, ends, strict=True)], dtype=np.float64)
        return DecodedVideo(self.mime, images, spans, duration, audio)


def _claimed_seconds(container: av.container.InputContainer) -> float | None:
    """The duration the container announces, if it announces a sane one."""
    if container.duration is None or container.duration <= 0:
        return None
    seconds = container.duration / av.time_base
    return seconds if math.isfinite(seconds) else None


def _start_seconds(container: av.container.InputContainer) -> float:
    """When the container's clock starts (its first packet's time), 0 if it does not say."""
    start = container.start_time
    if start is None:
        return 0.0
    seconds = start / av.time_base
    return seconds if math.isfinite(seconds) else 0.0


class _AudioCollector:
    """An audio track's frames -> mono float32 at ``rate``, bounded by the seconds limit."""

    def __init__(self, rate: int, limits: VideoLimits) -> None:
        self.rate = rate
        self.limit = int(limits.max_seconds * rate) + rate  # a second of slack for padding
        self.limits = limits
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self.chunks: list[np.ndarray] = []
        self.total = 0

    def add(self, frame: av.AudioFrame) -> None:
        if frame.sample_rate <= 0 or len(frame.layout.channels) > _AUDIO_CHANNELS_MAX:
            raise UnsupportedMediaError(
                "the video's audio track is damaged (invalid rate or channel count); re-encode it"
            )
        frame.pts = None  # resample by order; lying timestamps must not insert silence
        for out in self.resampler.resample(frame):
            self._append(out)

    def _append(self, out: av.AudioFrame) -> None:
        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self.total += len(samples)
        if self.total > self.limit:
            raise _too_long(self.limits)
        self.chunks.append(samples)

    def finish(self) -> np.ndarray | None:
        try:
            for out in self.resampler.resample(None):
                self._append(out)
        except _DECODE_ERRORS:
            pass  # the resampler's tail: the wave so far is whole
        if not self.chunks:
            return None
        wave = np.ascontiguousarray(np.concatenate(self.chunks), dtype=np.float32)
        if not np.isfinite(wave).all():
            raise UnsupportedMediaError("the video's audio samples are out of range; re-encode it")
        return wave


def _too_long(limits: VideoLimits) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"the video is longer than the {limits.max_seconds:g} s limit (MMR_MAX_VIDEO_SECONDS); "
        "cut it or raise the limit"
    )


def _request_deadline(limits: VideoLimits, budget: RequestBudget | None) -> _Deadline:
    """The decode time limit of a video, shared by every video of the request ``budget``
    belongs to: a batch of many gets the same seconds as one."""
    if budget is None:
        return _Deadline(limits.decode_seconds)
    if budget.decode_until is None:
        budget.decode_until = time.monotonic() + limits.decode_seconds
    return _Deadline(
        limits.decode_seconds,
        f"the request's videos take more than {limits.decode_seconds:g} s to decode, all "
        "together (MMR_VIDEO_DECODE_SECONDS); send fewer, shorter or smaller videos per request",
        at=budget.decode_until,
    )


class _Deadline:
    """The wall-clock moment a decode must be done by."""

    def __init__(self, seconds: float, message: str | None = None, *, at: float | None = None):
        self.seconds = seconds
        self.at = time.monotonic() + seconds if at is None else at
        self.message = message or (
            f"the video takes more than {seconds:g} s to decode (MMR_VIDEO_DECODE_SECONDS); "
            "send a shorter or smaller video"
        )

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def check(self) -> None:
        if self.passed():
            raise MediaTooLargeError(self.message)


class _TimedReader(io.BytesIO):
    """The file's bytes, each read and seek checking the decode's deadline: FFmpeg's demuxer
    reads through these, so a file that makes it loop stops when time is up."""

    def __init__(self, data: bytes, deadline: _Deadline) -> None:
        super().__init__(data)
        self._deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        # PyAV drops what a callback raises: the end of the file stops the demuxer instead,
        # and the decode loop's own check then raises.
        return b"" if self._deadline.passed() else super().read(size)


def _undecodable(exc: BaseException) -> UnsupportedMediaError:
    detail = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).rstrip(".")
    return UnsupportedMediaError(
        f"could not decode the video ({detail}); the file is damaged or cut off; {_ACCEPTED}"
    )
