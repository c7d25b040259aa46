"""The training synthesiser: phase-accumulated sines with harmonics, soft clipping and vibrato."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models.synth.world import waves
from models.synth.world.vocabulary import Attrs

# Frequency ranges (Hz) per class; every one stays under waves.MAX_FREQUENCY.
TONE_HZ = {"low": (120.0, 400.0), "high": (1000.0, 3500.0)}
BEEP_HZ = {"low": (200.0, 600.0), "high": (1200.0, 3500.0)}
CHIRP_LOW_HZ = (150.0, 900.0)  # the bottom of a sweep; the top is 2-8x higher, under 3.6 kHz
CHORD_ROOT_HZ = (150.0, 700.0)
BEEP_SECONDS = (0.06, 0.25)
GAP_SECONDS = (0.05, 0.3)
CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 4, 7, 11), (0, 3, 7, 10))  # semitones
COUNT = {"two": 2, "three": 3}

Content = Callable[[Attrs, np.random.Generator, int, float], np.ndarray]


def synth_train(attrs: Attrs, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A 1-3 s float32 clip of the sound at sample_rate, every nuisance drawn from rng."""
    content = _CONTENT[attrs["kind"]](attrs, rng, sample_rate, 2.95)
    total = rng.uniform(max(1.0, content.size / sample_rate + 0.05), 3.0)
    n = round(total * sample_rate)
    onset = rng.uniform(0, min(0.6, (n - content.size) / sample_rate))
    clip = waves.place(content, n, round(onset * sample_rate))
    if rng.random() < 0.75:
        background = waves.noise(rng, n)
        if rng.random() < 0.5:  # tilt the background's spectrum a little
            background[1:] += np.float32(rng.uniform(-0.6, 0.9)) * background[:-1]
        waves.add_at_snr(clip, background, waves.rms(content), rng.uniform(10, 40))
    return waves.to_peak(clip, rng.uniform(-30, -1))


def _tone(attrs: Attrs, rng: np.random.Generator, rate: int, room: float) -> np.ndarray:
    frequency = rng.uniform(*TONE_HZ[attrs["pitch"]])
    n = round(rng.uniform(0.5, room) * rate)
    phase = _vibrato(waves.steady_phase(frequency, n, rate), frequency, rng, rate)
    return _envelope(_timbre(phase, frequency, rng, rate), rng, rate)


def _chirp(attrs: Attrs, rng: np.random.Generator, rate: int, room: float) -> np.ndarray:
    bottom = rng.uniform(*CHIRP_LOW_HZ)
    top = bottom * rng.uniform(2.0, max(2.0, min(8.0, 3600.0 / bottom)))
    start, end = (bottom, top) if attrs["direction"] == "rising" else (top, bottom)
    seconds = rng.uniform(0.5, room)
    n = round(seconds * rate)
    if rng.random() < 0.5:  # linear sweep
        frequency = np.linspace(start, end, n, dtype=np.float32)
    else:  # exponential sweep: equal time per octave
        frequency = np.geomspace(start, end, n, dtype=np.float32)
    phase = waves.swept_phase(frequency, rate)
    return _envelope(_timbre(phase, top, rng, rate), rng, rate)


def _noise(_: Attrs, rng: np.random.Generator, rate: int, room: float) -> np.ndarray:
    n = round(rng.uniform(0.5, room) * rate)
    if rng.random() < 0.5:
        hiss = waves.noise(rng, n)
    else:
        hiss = rng.random(n, dtype=np.float32)
        hiss -= np.float32(0.5)
    # A two-tap filter colours it mildly; the spectrum stays broadband.
    hiss[1:] += np.float32(rng.uniform(-0.5, 0.5)) * hiss[:-1]
    return _envelope(hiss, rng, rate)


def _beeps(attrs: Attrs, rng: np.random.Generator, rate: int, room: float) -> np.ndarray:
    frequency = rng.uniform(*BEEP_HZ[attrs["pitch"]])
    length = round(rng.uniform(*BEEP_SECONDS) * rate)
    beep = _timbre(waves.steady_phase(frequency, length, rate), frequency, rng, rate)
    edge = max(round(rng.uniform(0.001, 0.015) * rate), 1)
    beep[:edge] *= waves.linear_ramp(edge, rising=True)
    beep[-edge:] *= waves.linear_ramp(edge, rising=False)
    parts = []
    for i in range(COUNT[attrs["count"]]):
        if i:
            parts.append(np.zeros(round(rng.uniform(*GAP_SECONDS) * rate), dtype=np.float32))
        parts.append(beep * np.float32(rng.uniform(0.8, 1.0)))
    return np.concatenate(parts)


def _chord(_: Attrs, rng: np.random.Generator, rate: int, room: float) -> np.ndarray:
    root = rng.uniform(*CHORD_ROOT_HZ)
    n = round(rng.uniform(0.5, room) * rate)
    chord = np.zeros(n, dtype=np.float32)
    for semitones in CHORDS[int(rng.integers(len(CHORDS)))]:
        frequency = root * 2 ** (semitones / 12)
        note = _timbre(waves.steady_phase(frequency, n, rate, rng.random()), frequency, rng, rate)
        note *= np.float32(rng.uniform(0.6, 1.0))
        chord += note
    return _envelope(chord, rng, rate)


_CONTENT: dict[str, Content] = {
    "tone": _tone,
    "chirp": _chirp,
    "noise": _noise,
    "beeps": _beeps,
    "chord": _chord,
}


def _vibrato(
    phase: np.ndarray, frequency: float, rng: np.random.Generator, rate: int
) -> np.ndarray:
    """Sometimes a slight (0.3-1.5%) 4-7 Hz frequency wobble, added to phase in place."""
    if rng.random() < 0.3:
        depth, speed = rng.uniform(0.003, 0.015), rng.uniform(4.0, 7.0)
        wobble = np.sin(waves.steady_phase(speed, phase.size, rate))
        wobble *= np.float32(frequency * depth / speed)
        phase += wobble
    return phase


def _timbre(phase: np.ndarray, top: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    """A pure sine, a few decaying harmonics, or a soft-clipped sine; nothing above 0.45·rate."""
    fundamental = np.sin(phase)
    pick = rng.random()
    if pick < 0.45:
        return fundamental
    if pick < 0.8:
        # sin(kθ) by the Chebyshev recurrence: two multiplies per harmonic instead of a sin.
        twice_cos = np.cos(phase)
        twice_cos *= np.float32(2)
        previous, current, wave = np.zeros_like(fundamental), fundamental, fundamental.copy()
        for k in range(2, int(rng.integers(2, 6)) + 1):
            following = twice_cos * current
            following -= previous
            previous, current = current, following
            if k * top < 0.45 * rate:
                wave += current * np.float32(rng.uniform(0.05, 0.5) / k)
        return wave
    if 3 * top >= 0.45 * rate:  # clipping's odd harmonics would alias
        return fundamental
    drive = rng.uniform(1.5, 4.0)
    fundamental *= np.float32(drive)
    clipped = np.tanh(fundamental, out=fundamental)
    clipped *= np.float32(1 / math.tanh(drive))
    return clipped


def _envelope(wave: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Linear attack and release, sometimes an exponential decay over the body; in place."""
    n = wave.size
    attack = min(round(rng.uniform(0.002, 0.08) * rate), n // 3)
    release = min(round(rng.uniform(0.01, 0.3) * rate), n // 3)
    wave[:attack] *= waves.linear_ramp(attack, rising=True)
    if release:
        wave[-release:] *= waves.linear_ramp(release, rising=False)
    if rng.random() < 0.3:  # at most ~22 dB down by the end: the class must stay audible
        decay = np.arange(n, dtype=np.float32)
        decay *= np.float32(-1 / (rng.uniform(0.4, 2.0) * n))
        wave *= np.exp(decay, out=decay)
    return wave
