"""The shifted synthesiser: band-limited wavetables, ADSR envelopes, strums and a short reverb.

It shares the class definitions (frequency ranges, counts, chords) with the training
synthesiser and nothing else: oscillators, sweep law, envelopes, noise colouring, background
and reverb are separate code, and ranges are drawn at the edges of each class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from models.synth.world import waves
from models.synth.world.jitter import draw_in
from models.synth.world.synth_train import (
    BEEP_HZ,
    BEEP_SECONDS,
    CHIRP_LOW_HZ,
    CHORD_ROOT_HZ,
    CHORDS,
    COUNT,
    GAP_SECONDS,
    TONE_HZ,
)
from models.synth.world.vocabulary import Attrs

_TABLE = 2048  # wavetable length (a power of two: indices wrap with a mask)
_MAX_PARTIALS = 12

Content = Callable[[Attrs, np.random.Generator, int], np.ndarray]


def synth_shifted(attrs: Attrs, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A 1-3 s float32 clip drawn differently from the training synthesiser's."""
    content = _CONTENT[attrs["kind"]](attrs, rng, sample_rate)
    if rng.random() < 0.5:
        short = attrs["kind"] == "beeps"  # a long tail would fill the gaps between beeps
        content = _reverb(content, rng, sample_rate, longest=0.04 if short else 0.1)
    # Content with a long tail may run past 3 s: the clip is then cut at 3 s.
    total = rng.uniform(min(max(1.0, content.size / sample_rate + 0.02), 3.0), 3.0)
    n = round(total * sample_rate)
    onset = draw_in(rng, (0.0, max(min(0.6, (n - content.size) / sample_rate), 0.0)), edge=True)
    clip = waves.place(content, n, round(onset * sample_rate))
    if rng.random() < 0.7:
        rumble = signal.lfilter([1.0], [1.0, -rng.uniform(0.5, 0.97)], waves.noise(rng, n))
        snr = draw_in(rng, (10.0, 40.0), edge=True)
        waves.add_at_snr(clip, rumble.astype(np.float32), waves.rms(content), snr)
    return waves.to_peak(clip, draw_in(rng, (-30.0, -1.0), edge=True))


def _tone(attrs: Attrs, rng: np.random.Generator, rate: int) -> np.ndarray:
    frequency = draw_in(rng, TONE_HZ[attrs["pitch"]], edge=True)
    n = round(rng.uniform(0.4, 2.9) * rate)
    cycles = frequency * waves.times(n, rate)
    return _oscillator(cycles, frequency, rng, rate) * _adsr(n, rng, rate)


def _chirp(attrs: Attrs, rng: np.random.Generator, rate: int) -> np.ndarray:
    bottom = draw_in(rng, CHIRP_LOW_HZ, edge=True)
    widest = max(2.0, min(8.0, 3600.0 / bottom))
    top = bottom * draw_in(rng, (2.0, widest), edge=True)
    start, end = (bottom, top) if attrs["direction"] == "rising" else (top, bottom)
    n = round(rng.uniform(0.4, 2.9) * rate)
    # Log-frequency follows a smoothstep: slow at both ends, fast in the middle.
    u = np.linspace(0.0, 1.0, n)
    frequency = start * (end / start) ** (u * u * (3 - 2 * u))
    cycles = np.cumsum(frequency) / rate
    return _oscillator(cycles, top, rng, rate) * _adsr(n, rng, rate)


def _noise(_: Attrs, rng: np.random.Generator, rate: int) -> np.ndarray:
    n = round(rng.uniform(0.4, 2.9) * rate)
    spectrum = np.fft.rfft(waves.noise(rng, n))
    bins = np.arange(1, spectrum.size + 1, dtype=np.float64)
    tilt = draw_in(rng, (-0.5, 0.5), edge=True)  # from faintly blue to faintly pink
    hiss = np.fft.irfft(spectrum * bins ** (-tilt / 2), n).astype(np.float32)
    return hiss * _adsr(n, rng, rate)


def _beeps(attrs: Attrs, rng: np.random.Generator, rate: int) -> np.ndarray:
    frequency = draw_in(rng, BEEP_HZ[attrs["pitch"]], edge=True)
    length = round(draw_in(rng, BEEP_SECONDS, edge=True) * rate)
    beep = _oscillator(frequency * waves.times(length, rate), frequency, rng, rate)
    beep *= _adsr(length, rng, rate, longest=0.02)
    gap = draw_in(rng, GAP_SECONDS, edge=True)
    parts = []
    for i in range(COUNT[attrs["count"]]):
        if i:
            jittered = max(gap * rng.uniform(0.9, 1.1), GAP_SECONDS[0])
            parts.append(np.zeros(round(jittered * rate), dtype=np.float32))
        parts.append(beep)
    return np.concatenate(parts)


def _chord(_: Attrs, rng: np.random.Generator, rate: int) -> np.ndarray:
    root = draw_in(rng, CHORD_ROOT_HZ, edge=True)
    notes = [root * 2 ** (s / 12) for s in CHORDS[int(rng.integers(len(CHORDS)))]]
    if rng.random() < 0.3 and notes[0] * 2 < waves.MAX_FREQUENCY:  # an inversion
        notes = [*notes[1:], notes[0] * 2]
    n = round(rng.uniform(0.4, 2.9) * rate)
    strum = round(rng.uniform(0.0, 0.04) * rate)
    chord = np.zeros(n + strum * len(notes), dtype=np.float32)
    for i, frequency in enumerate(notes):
        note = _oscillator(frequency * waves.times(n, rate), frequency, rng, rate)
        chord[i * strum : i * strum + n] += note * _adsr(n, rng, rate)
    return chord


_CONTENT: dict[str, Content] = {
    "tone": _tone,
    "chirp": _chirp,
    "noise": _noise,
    "beeps": _beeps,
    "chord": _chord,
}


def _oscillator(cycles: np.ndarray, top: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    """Read a square-, triangle- or saw-like wavetable, band-limited below top's aliasing."""
    partials = max(1, min(_MAX_PARTIALS, int(0.45 * rate / top)))
    k = np.arange(1, partials + 1, dtype=np.float64)
    shape = int(rng.integers(3))
    if shape == 0:  # square-like: odd partials at 1/k
        weights = np.where(k % 2 == 1, 1 / k, 0.0)
    elif shape == 1:  # triangle-like: odd partials at ±1/k²
        signs = np.where((k - 1) % 4 == 0, 1.0, -1.0)
        weights = np.where(k % 2 == 1, signs / k**2, 0.0)
    else:  # saw-like: every partial at 1/k
        weights = 1 / k
    weights /= 1 + (k / rng.uniform(1.5, 6.0)) ** 2  # a gentle low-pass on top
    grid = np.arange(_TABLE, dtype=np.float64) / _TABLE
    table = (weights @ waves.sine(np.outer(k, grid))).astype(np.float32)
    table /= np.abs(table).max()
    index = ((cycles - np.floor(cycles)) * _TABLE).astype(np.int32) & (_TABLE - 1)
    return table[index]


def _adsr(n: int, rng: np.random.Generator, rate: int, *, longest: float = 0.15) -> np.ndarray:
    """Exponential attack, decay to a sustain level, exponential release; maybe tremolo."""
    t = np.arange(n, dtype=np.float32) / np.float32(rate)
    attack, release = rng.uniform(0.003, longest, 2)
    sustain = rng.uniform(0.4, 0.9)
    rise = 1 - np.exp(-5 * t / np.float32(attack))
    body = sustain + (1 - sustain) * np.exp(-(t / np.float32(rng.uniform(0.05, 0.5))))
    end = np.float32(n / rate)
    fall = np.clip((end - t) / np.float32(release), 0, 1) ** 2
    envelope = rise * body * fall
    if rng.random() < 0.25:
        wobble = waves.sine(rng.uniform(3.0, 8.0) * t.astype(np.float64))
        envelope *= 1 - np.float32(rng.uniform(0.1, 0.3)) * (0.5 + 0.5 * wobble)
    return envelope.astype(np.float32)


def _reverb(dry: np.ndarray, rng: np.random.Generator, rate: int, *, longest: float) -> np.ndarray:
    """The dry sound plus a decaying-noise room tail (convolution), tail kept."""
    decay = rng.uniform(0.02, longest)
    length = max(round(4 * decay * rate), 2)
    impulse = waves.noise(rng, length) * np.exp(-np.arange(length) / (decay * rate))
    wet = signal.oaconvolve(dry, impulse.astype(np.float32))
    wet *= np.float32(rng.uniform(0.1, 0.35) * waves.rms(dry) / max(waves.rms(wet), 1e-12))
    wet[: dry.size] += dry
    return wet.astype(np.float32)
