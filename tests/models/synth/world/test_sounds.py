"""Sounds, their captions and their synthesis: what a caption says can be heard in the clip."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from models.synth.world.sounds import (
    MP3_RATES,
    SOUND_CLASSES,
    Sound,
    audio_file_bytes,
    caption_sound,
    sample_sound,
    synthesize,
)
from models.synth.world.vocabulary import WORDS, describes, parse_caption
from models.synth.world.waves import SAMPLE_RATES
from tests.models.synth.world.analysis import (
    count_bursts,
    dominant_frequency,
    peak_dbfs,
    peak_track,
)

STYLES = ("train", "shifted")
COUNTS = {"two": 2, "three": 3}


def sounds_of(kind: str, n: int, seed: int) -> list[Sound]:
    rng = np.random.default_rng(seed)
    drawn = (sample_sound(rng) for _ in range(50 * n))
    return [s for s in drawn if s.objects[0]["kind"] == kind][:n]


def test_the_eight_classes_come_about_equally_often() -> None:
    rng = np.random.default_rng(1)
    drawn = [sample_sound(rng).objects[0] for _ in range(4000)]
    classes = Counter(
        o.get("count") or o.get("pitch") or o.get("direction") or o["kind"] for o in drawn
    )
    assert len(classes) == len(SOUND_CLASSES)
    assert min(classes.values()) > 400
    beep_pitches = Counter(o["pitch"] for o in drawn if o["kind"] == "beeps")
    assert set(beep_pitches) == {"low", "high"}


@pytest.mark.parametrize("detail", ["random", "full", "minimal"])
def test_captions_parse_back_and_never_lie(detail: str) -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        sound = sample_sound(rng)
        caption = caption_sound(sound, rng, detail=detail)
        parsed = parse_caption(caption.text)
        assert [dict(m) for m in parsed.mentions] == [dict(m) for m in caption.mentions]
        assert describes(caption.mentions, sound.objects), caption.text
        assert set(caption.text.split()) <= set(WORDS), caption.text
        beeps = sound.objects[0]["kind"] == "beeps"
        if beeps and detail != "random":
            assert ("pitch" in caption.mentions[0]) == (detail == "full")


def test_captions_come_in_several_phrasings() -> None:
    rng = np.random.default_rng(3)
    texts = {caption_sound(sample_sound(rng), rng).text for _ in range(400)}
    for expected in ("two beeps", "three high beeps", "a rising chirp", "white noise", "a chord"):
        assert expected in texts
    assert any(t.startswith("the sound of ") for t in texts)
    assert any("pitched" in t for t in texts)


@pytest.mark.parametrize("style", STYLES)
def test_clips_are_mono_float32_of_one_to_three_seconds(style: str) -> None:
    rng = np.random.default_rng(4)
    rates, peaks = set(), []
    for i in range(48):
        wave, rate = synthesize(sample_sound(rng), np.random.default_rng(i), style=style)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert rate in SAMPLE_RATES
        assert 1.0 <= wave.size / rate <= 3.0
        assert np.isfinite(wave).all()
        rates.add(rate)
        peaks.append(peak_dbfs(wave))
    assert len(rates) >= 4
    assert min(peaks) >= -30.1 and max(peaks) <= -0.9
    assert max(peaks) - min(peaks) > 15  # loudness varies


def test_a_requested_rate_is_used_and_too_low_a_rate_refused() -> None:
    sound = sample_sound(np.random.default_rng(5))
    assert synthesize(sound, np.random.default_rng(0), sample_rate=11025)[1] == 11025
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize(sound, np.random.default_rng(0), sample_rate=4000)
    with pytest.raises(ValueError, match="style"):
        synthesize(sound, np.random.default_rng(0), style="live")


@pytest.mark.parametrize("style", STYLES)
def test_tones_sound_low_or_high_as_captioned(style: str) -> None:
    for i, sound in enumerate(sounds_of("tone", 16, seed=6)):
        wave, rate = synthesize(sound, np.random.default_rng(i), style=style)
        frequency = dominant_frequency(wave, rate)
        if sound.objects[0]["pitch"] == "low":
            assert frequency < 700, frequency
        else:
            assert 900 < frequency < 3800, frequency


def test_chirps_rise_or_fall_as_captioned() -> None:
    for i, sound in enumerate(sounds_of("chirp", 16, seed=7)):
        wave, rate = synthesize(sound, np.random.default_rng(i))
        track = peak_track(wave, rate)
        third = track.size // 3
        start, end = np.median(track[:third]), np.median(track[-third:])
        if sound.objects[0]["direction"] == "rising":
            assert end > 1.25 * start, (start, end)
        else:
            assert start > 1.25 * end, (start, end)


def test_beeps_can_be_counted_and_pitched() -> None:
    for i, sound in enumerate(sounds_of("beeps", 20, seed=8)):
        wave, rate = synthesize(sound, np.random.default_rng(i))
        obj = sound.objects[0]
        assert count_bursts(wave, rate) == COUNTS[obj["count"]]
        frequency = dominant_frequency(wave, rate)
        assert frequency < 700 if obj["pitch"] == "low" else frequency > 1100, frequency


@pytest.mark.parametrize("style", STYLES)
def test_noise_is_broadband_and_tones_are_not(style: str) -> None:
    # The loudest 1% of spectral bins hold little of a noise's power and most of a tone's.
    for i, kind in enumerate(["noise"] * 6 + ["tone"] * 6):
        sound = sounds_of(kind, 1, seed=9 + i)[0]
        wave, _ = synthesize(sound, np.random.default_rng(i), style=style)
        power = np.sort(np.abs(np.fft.rfft(wave)) ** 2)[::-1]
        top_share = power[: power.size // 100].sum() / power.sum()
        assert top_share < 0.3 if kind == "noise" else top_share > 0.6, (kind, top_share)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_audio_files_decode(fmt: str) -> None:
    sound = sounds_of("chord", 1, seed=10)[0]
    for rate in (8000, 22050, 48000):
        wave, _ = synthesize(sound, np.random.default_rng(rate), sample_rate=rate)
        data, mime = audio_file_bytes(wave, rate, np.random.default_rng(0), fmt=fmt)
        assert mime.startswith("audio/")
        decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float32")
        assert decoded_rate == rate and decoded.ndim == 1
        assert abs(decoded.size - wave.size) < 0.1 * rate  # codecs may pad a frame or two
        if fmt in ("wav", "flac"):
            assert decoded.size == wave.size
            assert np.abs(decoded - wave).max() < 1e-3


def test_file_formats_are_drawn_and_mp3_only_where_it_can_be_written() -> None:
    wave = np.zeros(11025, dtype=np.float32)
    seen = Counter(audio_file_bytes(wave, 22050, np.random.default_rng(i))[1] for i in range(40))
    assert set(seen) == {"audio/wav", "audio/flac", "audio/ogg", "audio/mpeg"}
    assert 11000 not in MP3_RATES
    odd_rate = {audio_file_bytes(wave, 11000, np.random.default_rng(i))[1] for i in range(30)}
    assert "audio/mpeg" not in odd_rate
    with pytest.raises(ValueError, match="MP3"):
        audio_file_bytes(wave, 11000, np.random.default_rng(0), fmt="mp3")
