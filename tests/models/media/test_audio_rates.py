"""Audio headers that lie about the sample rate, and what decoding holds in memory.

The duration limit is frames / rate, so a header that claims a huge rate makes any length
look short: every cap must hold on what is actually decoded.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf

from bench.hostile import ogg_crc
from models.errors import MediaTooLargeError, UnsupportedMediaError
from models.media import audio as audio_module
from models.media.audio import MAX_SAMPLE_RATE, decode_audio, probe_audio
from models.media.budget import MB, DecodeBudget, RequestBudget
from tests.factories import audio_bytes, tone

TARGET = 16000


def wav_with_rate(data: bytes, rate: int) -> bytes:
    """The WAV with the sample rate (and byte rate) of its fmt chunk replaced."""
    assert data[12:16] == b"fmt "
    block_align = int.from_bytes(data[32:34], "little")
    byte_rate = min(rate * block_align, 0xFFFFFFFF)
    return data[:24] + rate.to_bytes(4, "little") + byte_rate.to_bytes(4, "little") + data[32:]


def flac_with_rate(data: bytes, rate: int) -> bytes:
    """The FLAC with the 20-bit sample rate of its STREAMINFO block replaced."""
    patched = bytearray(data)
    field = int.from_bytes(patched[18:26], "big")
    field = (field & ((1 << 44) - 1)) | (rate << 44)
    patched[18:26] = field.to_bytes(8, "big")
    return bytes(patched)


def ogg_with_rate(data: bytes, rate: int) -> bytes:
    """The Ogg Vorbis file with the 32-bit rate of its identification header replaced."""
    segments = data[26]
    packet = 27 + segments  # the first page holds the identification packet alone
    assert data[packet : packet + 7] == b"\x01vorbis"
    at = packet + 12  # after the type, "vorbis", the version and the channel count
    page_end = packet + sum(data[27:packet])
    page = bytearray(data[:page_end])
    page[at : at + 4] = rate.to_bytes(4, "little")
    page[22:26] = bytes(4)
    page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
    return bytes(page) + data[page_end:]


LIARS: dict[str, Callable[[bytes, int], bytes]] = {
    "WAV": wav_with_rate,
    "FLAC": flac_with_rate,
    "OGG": ogg_with_rate,
}
# FLAC's field has 20 bits; WAV and Vorbis 32, read by libsndfile as a signed int.
CLAIMS = [(fmt, rate) for fmt in LIARS for rate in (384_001, 1_000_000, 2_000_000_000)]
CLAIMS = [(fmt, rate) for fmt, rate in CLAIMS if fmt != "FLAC" or rate < 1 << 20]


@pytest.fixture
def no_sample_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode samples fail the test: only the header may be read."""

    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", refuse)


@pytest.mark.parametrize(("fmt", "rate"), CLAIMS)
def test_a_claimed_rate_over_384_khz_is_refused_before_decoding(
    fmt: str, rate: int, no_sample_reads: None
) -> None:
    lying = LIARS[fmt](audio_bytes(fmt, seconds=0.5), rate)
    assert sf.info(io.BytesIO(lying)).samplerate == rate  # the patch is what libsndfile reads
    message = f"claims {rate} Hz, over the {MAX_SAMPLE_RATE} Hz we decode"
    with pytest.raises(UnsupportedMediaError, match=message):
        probe_audio(lying, max_seconds=600)
    with pytest.raises(UnsupportedMediaError, match=message):
        decode_audio(lying, target_rate=TARGET, max_seconds=600)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_384_khz_itself_decodes(fmt: str) -> None:
    data = audio_bytes(fmt, seconds=0.25, rate=MAX_SAMPLE_RATE)
    assert len(decode_audio(data, target_rate=TARGET, max_seconds=1)) == 4000


def test_a_rate_that_passes_still_cannot_decode_past_the_seconds_limit() -> None:
    # 2 s at 16 kHz claimed as 384 kHz: 0.08 s by the header, 32000 frames really; the
    # limit counts frames at the rate decoded, so 0.05 s stops it after 19200.
    lying = wav_with_rate(audio_bytes("WAV", seconds=2.0), MAX_SAMPLE_RATE)
    with pytest.raises(MediaTooLargeError, match=r"the 0\.05 s limit"):
        decode_audio(lying, target_rate=TARGET, max_seconds=0.05)


def test_decoding_stops_at_the_frame_cap_whatever_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audio_module, "MAX_FRAMES", 20_000)
    with pytest.raises(MediaTooLargeError, match="more than 20000 samples a channel"):
        decode_audio(audio_bytes("FLAC", seconds=2.0), target_rate=TARGET, max_seconds=1e9)
    assert len(decode_audio(audio_bytes("FLAC", seconds=1.0), target_rate=TARGET, max_seconds=1e9))


def test_decoding_holds_the_output_not_the_source() -> None:
    # 10 s at 384 kHz: 15 MB as float32 at the source rate, 0.6 MB at 16 kHz.
    data = audio_bytes("WAV", seconds=10.0, rate=MAX_SAMPLE_RATE)
    tracemalloc.start()
    try:
        wave = decode_audio(data, target_rate=TARGET, max_seconds=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(wave) == 160_000
    assert peak < 4 * MB, peak / MB


# --- budgets ---


def budget(capacity_mb: float = 64, request_mb: float = 64) -> RequestBudget:
    """A request's budget in a process budget of its own."""
    return RequestBudget(DecodeBudget(int(capacity_mb * MB), wait_s=0.05), int(request_mb * MB))


def test_the_wave_keeps_its_bytes_reserved_until_it_is_dropped() -> None:
    request = budget()
    data = audio_bytes("FLAC", seconds=2.0, rate=44100)
    wave = decode_audio(data, target_rate=TARGET, max_seconds=10, budget=request)
    assert request.process.used == wave.nbytes == request.used
    del wave
    gc.collect()
    assert request.process.used == 0


def test_audio_over_the_request_budget_is_refused_before_decoding(
    no_sample_reads: None,
) -> None:
    data = audio_bytes("FLAC", seconds=2.0)  # 128 KB at 16 kHz
    with pytest.raises(MediaTooLargeError, match="one request may hold"):
        decode_audio(data, target_rate=TARGET, max_seconds=10, budget=budget(request_mb=0.1))


def test_audio_that_decodes_past_its_header_grows_its_reservation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libsndfile stops at the header's count; a reader that does not (an MP3 whose length
    # was estimated short) must not decode past what the process's budget allows.
    def endless(self: sf.SoundFile, frames: int, **kwargs: object) -> np.ndarray:
        return tone(frames / self.samplerate, rate=self.samplerate)

    monkeypatch.setattr(sf.SoundFile, "read", endless)
    data = audio_bytes("MP3", seconds=1.0)
    header_peak = audio_module._peak_bytes(
        probe_audio(data, max_seconds=10), 16000, target_rate=TARGET
    )
    request = budget(capacity_mb=(header_peak + 300_000) / MB)
    with pytest.raises(MediaTooLargeError, match="longer than its header announced"):
        decode_audio(data, target_rate=TARGET, max_seconds=3600, budget=request)
    assert request.process.used == 0
    assert request.used == 0
