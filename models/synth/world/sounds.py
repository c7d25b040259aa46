"""Sounds (tones, chirps, noise, beeps, chords): sampling, captions, synthesis, file encoding."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from models.synth.world.synth_shifted import synth_shifted
from models.synth.world.synth_train import synth_train
from models.synth.world.vocabulary import Caption, Thing
from models.synth.world.waves import SAMPLE_RATES

# The eight captioned classes, drawn uniformly; beeps then get a pitch.
SOUND_CLASSES: tuple[dict[str, str], ...] = (
    {"kind": "tone", "pitch": "low"},
    {"kind": "tone", "pitch": "high"},
    {"kind": "chirp", "direction": "rising"},
    {"kind": "chirp", "direction": "falling"},
    {"kind": "noise"},
    {"kind": "beeps", "count": "two"},
    {"kind": "beeps", "count": "three"},
    {"kind": "chord"},
)
SYNTHESISERS: dict[str, Callable[[Mapping[str, str], np.random.Generator, int], np.ndarray]] = {
    "train": synth_train,
    "shifted": synth_shifted,
}
# Rates libsndfile's MP3 (LAME) encoder takes: MPEG-1, -2 and -2.5 layer III.
MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
AUDIO_CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
}
_PREFIXES = ("", "the sound of ", "a sound of ")
_PREFIX_WEIGHTS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class Sound(Thing):
    """One sound object: kind plus pitch, direction or count as the kind has them."""


def sample_sound(rng: np.random.Generator) -> Sound:
    """One of the eight classes uniformly; beeps get a low or high pitch."""
    attrs = dict(SOUND_CLASSES[rng.integers(len(SOUND_CLASSES))])
    if attrs["kind"] == "beeps":
        attrs["pitch"] = "low" if rng.random() < 0.5 else "high"
    return Sound(objects=(attrs,))


def caption_sound(sound: Thing, rng: np.random.Generator, *, detail: str = "random") -> Caption:
    """A caption of the sound; beep pitch said with p=0.5 ("random"), always ("full") or never."""
    if detail not in ("random", "full", "minimal"):
        raise ValueError(f"detail must be random, full or minimal, not {detail!r}")
    attrs = sound.objects[0]
    kind = attrs["kind"]
    mention = {"kind": kind}
    if kind == "tone":
        mention["pitch"] = attrs["pitch"]
        pitched = "pitched " if rng.random() < 0.25 else ""
        phrase = f"a {attrs['pitch']} {pitched}tone"
    elif kind == "chirp":
        mention["direction"] = attrs["direction"]
        phrase = f"a {attrs['direction']} chirp"
    elif kind == "beeps":
        mention["count"] = attrs["count"]
        say_pitch = detail == "full" or (detail == "random" and rng.random() < 0.5)
        if say_pitch:
            mention["pitch"] = attrs["pitch"]
        phrase = f"{attrs['count']} {attrs['pitch'] + ' ' if say_pitch else ''}beeps"
    else:
        phrase = "white noise" if kind == "noise" else "a chord"
    prefix = _PREFIXES[rng.choice(len(_PREFIXES), p=_PREFIX_WEIGHTS)]
    return Caption(text=prefix + phrase, mentions=(mention,))


def synthesize(
    sound: Thing,
    rng: np.random.Generator,
    *,
    style: str = "train",
    sample_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """A mono float32 clip of 1-3 s and its rate (drawn from SAMPLE_RATES when not given)."""
    try:
        synth = SYNTHESISERS[style]
    except KeyError:
        raise ValueError(f"style must be one of {tuple(SYNTHESISERS)}, not {style!r}") from None
    if sample_rate is None:
        sample_rate = int(SAMPLE_RATES[rng.integers(len(SAMPLE_RATES))])
    elif sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, not {sample_rate}")
    return synth(sound.objects[0], rng, sample_rate), sample_rate


def audio_file_bytes(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, fmt: str | None = None
) -> tuple[bytes, str]:
    """The clip encoded as WAV (PCM_16 or FLOAT), FLAC, Ogg Vorbis or MP3, and its MIME type."""
    if fmt is None:
        choices = [f for f in AUDIO_FORMATS if f != "mp3" or sample_rate in MP3_RATES]
        fmt = choices[rng.integers(len(choices))]
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"fmt must be one of {AUDIO_FORMATS}, not {fmt!r}")
    if fmt == "mp3" and sample_rate not in MP3_RATES:
        raise ValueError(f"MP3 cannot be written at {sample_rate} Hz")
    subtype = {
        "wav": "PCM_16" if rng.random() < 0.7 else "FLOAT",
        "flac": "PCM_16",
        "ogg": "VORBIS",
        "mp3": "MPEG_LAYER_III",
    }[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format=fmt.upper(), subtype=subtype)
    return buffer.getvalue(), AUDIO_CONTENT_TYPES[fmt]
