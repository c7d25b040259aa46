"""Audio decoding for uploads: type sniffing, header checks before decoding, mono float32 out."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from models.errors import MediaTooLargeError, UnsupportedMediaError
from models.media.budget import RequestBudget, Reservation

_ACCEPTED = "send WAV, FLAC, Ogg Vorbis or MP3 audio"
_LIMIT_HINT = "(MMR_MAX_AUDIO_SECONDS); cut it or raise the limit"

# Sniffed MIME type -> the container libsndfile must then report; a mismatch is refused.
_CONTAINERS = {"audio/wav": "WAV", "audio/flac": "FLAC", "audio/ogg": "OGG", "audio/mpeg": "MP3"}

# What soundfile raises on files it cannot open or decode. Fuzzing every format (bit flips,
# cuts, splices) only ever produced LibsndfileError (a SoundFileError and RuntimeError): bad
# headers, cut-off FLAC, lost sync, malformed Ogg, MP3 without frames. Anything else is our bug.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (sf.SoundFileError,)

_MAX_CHANNELS = 32
# Highest sample rate taken: studio masters go to 384 kHz. An Ogg Vorbis header may claim any
# 32-bit rate and FLAC up to 1 MHz, and the duration limit is frames / rate: a forged rate
# would let a short "duration" decode to gigabytes.
MAX_SAMPLE_RATE = 384_000
# Most frames decoded from one file, whatever the settings: an hour and a half at 192 kHz.
MAX_FRAMES = 2**30
# A file must hold at least this share of the audio its header announces, else it was cut off
# or the header lies. Not 1.0: an MP3 cut by a byte loses its last frame, which is harmless.
_MIN_PRESENT = 0.9
# Most frames one byte of a compressed file can carry: measured best cases (two minutes of
# silence) are ~420 for FLAC and Vorbis, ~12 for MP3; FLAC's format allows ~6000 at most.
_MAX_FRAMES_PER_BYTE = 20_000
# RIFF chunks walked to find a WAV's data chunk; real files have a handful.
_MAX_RIFF_CHUNKS = 64
_BLOCK_FRAMES = 65_536
# What soxr's streaming resampler holds besides its output (filters and buffers; measured
# well under this at every rate ratio up to 384 kHz -> 8 kHz).
_RESAMPLER_BYTES = 4 * 1024 * 1024
# libsndfile's frame count for "length unknown".
_SF_COUNT_MAX = 2**63 - 1


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says, after our checks."""

    mime: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def sniff_audio(data: bytes) -> str | None:
    """MIME type of a WAV, FLAC, Ogg or MP3 file from its first bytes, else None."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def probe_audio(data: bytes, *, max_seconds: float) -> AudioInfo:
    """Read and check an audio file's header without decoding its samples."""
    sound, mime = _open(data)
    with sound:
        return _check_header(sound, mime, data, max_seconds)


def decode_audio(
    data: bytes, *, target_rate: int, max_seconds: float, budget: RequestBudget | None = None
) -> np.ndarray:
    """Decode audio bytes to finite float32 mono at target_rate, refusing broken or long files.

    Blocks are resampled as they are decoded, so only the output at ``target_rate`` is held.
    With ``budget`` (the request's), the output the header announces and the decode's peak
    are reserved there first (413 over the request's budget or when the peak could never fit
    the process's, 429 when the process's stays full), grown if the file decodes to more than
    its header announced; the returned wave keeps its bytes reserved in the process's budget
    until it is garbage collected.
    """
    sound, mime = _open(data)
    with sound:
        info = _check_header(sound, mime, data, max_seconds)
        if budget is None:
            return _read_mono(sound, info, max_seconds, target_rate, None)
        what = f"the {info.seconds:.1f} s recording"
        peak = _peak_bytes(info, info.frames, target_rate)
        with budget.reserve(peak, _out_bytes(info, info.frames, target_rate), what) as reservation:
            wave = _read_mono(sound, info, max_seconds, target_rate, reservation)
            reservation.keep(wave, wave.nbytes, what)
            return wave


def _open(data: bytes) -> tuple[sf.SoundFile, str]:
    """Sniff the type and open the bytes with libsndfile (reads the header only)."""
    mime = sniff_audio(data)
    if mime is None:
        raise UnsupportedMediaError(f"unsupported audio type; {_ACCEPTED}")
    try:
        return sf.SoundFile(io.BytesIO(data)), mime
    except _DECODE_ERRORS as exc:
        raise _undecodable(exc) from exc


def _check_header(sound: sf.SoundFile, mime: str, data: bytes, max_seconds: float) -> AudioInfo:
    """Validate what the header says; the duration limit is checked before any decoding."""
    # Opus in Ogg is refused: libsndfile 1.2.2 counts its frames at 48 kHz whatever the rate.
    opus = mime == "audio/ogg" and sound.subtype != "VORBIS"
    if sound.format != _CONTAINERS[mime] or opus:
        raise UnsupportedMediaError(
            f"the file starts like {mime} but holds {sound.format} {sound.subtype} audio, "
            f"which we do not decode; {_ACCEPTED}"
        )
    info = AudioInfo(mime, sound.samplerate, sound.channels, sound.frames)
    _check_layout(info)
    _check_not_cut_off(info, data)
    if info.seconds > max_seconds:
        raise MediaTooLargeError(
            f"the audio is {info.seconds:.1f} s long, "
            f"over the {max_seconds:g} s limit {_LIMIT_HINT}"
        )
    return info


def _check_layout(info: AudioInfo) -> None:
    """Refuse impossible rates and channel counts, too many channels and empty files."""
    if info.sample_rate <= 0 or info.channels <= 0:
        raise UnsupportedMediaError(
            f"the audio header is invalid ({info.sample_rate} Hz, {info.channels} channels); "
            f"the file is damaged, {_ACCEPTED}"
        )
    if info.sample_rate > MAX_SAMPLE_RATE:
        raise UnsupportedMediaError(
            f"the audio header claims {info.sample_rate} Hz, over the {MAX_SAMPLE_RATE} Hz we "
            f"decode (a damaged or forged header); re-export it at 48 kHz, {_ACCEPTED}"
        )
    if info.channels > _MAX_CHANNELS:
        raise UnsupportedMediaError(
            f"the audio has {info.channels} channels, over the limit of {_MAX_CHANNELS}; "
            "mix it down to fewer channels"
        )
    if info.frames <= 0:
        raise UnsupportedMediaError(
            "the audio file holds no samples (it is empty or cut off); upload a recording"
        )
    if info.frames >= _SF_COUNT_MAX:
        # libsndfile cannot finish decoding these (FLAC without a sample count fails at the end).
        raise UnsupportedMediaError(
            "the audio file does not record its length (written by a streaming encoder?); "
            "re-encode it to a regular file"
        )


def _check_not_cut_off(info: AudioInfo, data: bytes) -> None:
    """Refuse a header that announces far more audio than the bytes can hold."""
    if info.mime == "audio/wav":
        # libsndfile silently shortens a WAV to the bytes present, so read the RIFF size ourselves.
        sizes = _wav_data_sizes(data)
        if sizes is not None and sizes[1] < _MIN_PRESENT * sizes[0]:
            raise _cut_off(f"its data chunk announces {sizes[0]} bytes but holds {sizes[1]}")
    elif info.frames > _MAX_FRAMES_PER_BYTE * len(data):
        raise _cut_off(f"its header announces {info.seconds:.1f} s in only {len(data)} bytes")


def _wav_data_sizes(data: bytes) -> tuple[int, int] | None:
    """Return (announced, present) byte counts of a WAV's data chunk; None if unknown."""
    pos = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        if pos + 8 > len(data):
            break
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            # 0 and 0xFFFFFFFF are what streaming writers put in when the length is unknown.
            return None if size in (0, 0xFFFFFFFF) else (size, len(data) - pos - 8)
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _read_mono(
    sound: sf.SoundFile,
    info: AudioInfo,
    max_seconds: float,
    target_rate: int,
    reservation: Reservation | None,
) -> np.ndarray:
    """Decode block by block into mono at target_rate, stopping once more than max_seconds
    (or MAX_FRAMES) has come out."""
    # libsndfile stops at the header's frame count, but MP3/Ogg counts can be estimates:
    # the bound here does not rely on that.
    limit = min(int(max_seconds * info.sample_rate), MAX_FRAMES)
    resampler = _Resampler(info.sample_rate, target_rate)
    total = 0
    while (block := _read_block(sound, min(_BLOCK_FRAMES, limit + 1 - total))) is not None:
        total += len(block)
        if total > limit:
            raise _too_long(max_seconds, limit)
        resampler.add(block)
        if reservation is not None and total > info.frames:  # more than the header announced
            what = f"the audio, longer than its header announced ({info.seconds:.1f} s)"
            reservation.resize(_peak_bytes(info, total + _BLOCK_FRAMES, target_rate), what)
    if total < _MIN_PRESENT * info.frames:
        decoded = total / info.sample_rate
        raise _cut_off(f"its header announces {info.seconds:.2f} s but only {decoded:.2f} s decode")
    return _checked(resampler.finish(), target_rate)


def _too_long(max_seconds: float, limit: int) -> MediaTooLargeError:
    """The error for a file that decoded past ``limit`` frames."""
    if limit == MAX_FRAMES:
        return MediaTooLargeError(
            f"the audio decodes to more than {MAX_FRAMES} samples a channel, the most we decode "
            "from one file; cut it into parts"
        )
    return MediaTooLargeError(f"the audio is longer than the {max_seconds:g} s limit {_LIMIT_HINT}")


def _peak_bytes(info: AudioInfo, frames: int, target_rate: int) -> int:
    """Most bytes decoding ``frames`` of the file holds at once: a block of every channel
    (and its float64 mean), and the output at ``target_rate`` twice (its chunks and the
    array they are joined into)."""
    block = _BLOCK_FRAMES * (4 * info.channels + 8 + 4)
    return block + 2 * _out_bytes(info, frames, target_rate) + _RESAMPLER_BYTES


def _out_bytes(info: AudioInfo, frames: int, target_rate: int) -> int:
    """Bytes ``frames`` of the file take as float32 mono at ``target_rate``."""
    return 4 * (math.ceil(frames * target_rate / info.sample_rate) + 1)


class _Resampler:
    """Blocks of mono at one rate in, the whole wave at another out (soxr, streaming: the
    same samples as one soxr.resample call over the joined blocks)."""

    def __init__(self, rate: int, target_rate: int) -> None:
        self._stream = (
            None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, "float32")
        )
        self._chunks: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Resample a block (kept as it is when the rates match)."""
        out = block if self._stream is None else self._stream.resample_chunk(block)
        if len(out):
            self._chunks.append(out)

    def finish(self) -> np.ndarray:
        """The whole output, the resampler's tail included."""
        if self._stream is not None:
            self._chunks.append(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _read_block(sound: sf.SoundFile, frames: int) -> np.ndarray | None:
    """Read up to frames frames and average the channels; None at the end of the stream."""
    try:
        block = sound.read(frames, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise _undecodable(exc) from exc
    if len(block) == 0:
        return None
    if not np.isfinite(block).all():
        raise UnsupportedMediaError(
            "the audio holds NaN or infinite samples (a damaged float file); re-export it"
        )
    # float64 sum: averaging float32 samples near the format's maximum must not overflow.
    mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float64)
    return np.asarray(mono, dtype=np.float32)


def _checked(wave: np.ndarray, target_rate: int) -> np.ndarray:
    """The resampled wave as contiguous float32, checked usable."""
    out = np.ascontiguousarray(wave, dtype=np.float32)
    if out.size == 0:
        raise UnsupportedMediaError(
            f"the audio is too short: under one sample at {target_rate} Hz; upload a longer clip"
        )
    if not np.isfinite(out).all():
        # Finite samples at the float32 maximum can still resample to inf or NaN.
        raise UnsupportedMediaError("the audio's samples are out of range; normalise and re-export")
    return out


def _cut_off(detail: str) -> UnsupportedMediaError:
    """Build the error for a file that holds less audio than its header announces."""
    return UnsupportedMediaError(
        f"the audio file is cut off or its header is wrong: {detail}; upload the complete file"
    )


def _undecodable(exc: BaseException) -> UnsupportedMediaError:
    """Build the error for a file libsndfile cannot read, without its object repr prefix."""
    detail = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
    return UnsupportedMediaError(
        f"could not decode the audio ({detail.rstrip('.')}); the file is damaged or of a type "
        f"we do not read; {_ACCEPTED}"
    )
