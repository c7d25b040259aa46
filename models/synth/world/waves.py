"""Waveform building blocks both synthesisers share: fast sines, stock noise, levels, mixing."""

from __future__ import annotations

import functools
import math

import numpy as np

SAMPLE_RATES = (8000, 16000, 22050, 32000, 44100, 48000)
MAX_FREQUENCY = 3800.0  # every class's content stays under this, so 8 kHz files keep it
_BANK_SIZE = 1 << 18  # longer than 3 s at 48 kHz
_TWO_PI = np.float32(2 * math.pi)


def times(n: int, sample_rate: int) -> np.ndarray:
    """Sample times in seconds, float64 (phases of kHz tones over seconds need the precision)."""
    t = np.arange(n, dtype=np.float64)
    t /= sample_rate
    return t


def steady_phase(frequency: float, n: int, sample_rate: int, start: float = 0.0) -> np.ndarray:
    """Phase in radians, [0, 2π), of a constant-frequency oscillator; float32.

    A uint32 accumulator wraps modulo one cycle by itself, so no float64 array is needed.
    """
    step = np.uint32(round(frequency / sample_rate * 2**32) % 2**32)
    phase = np.arange(n, dtype=np.uint32)
    phase *= step
    phase += np.uint32(int(start * 2**32) % 2**32)
    radians = phase.astype(np.float32)
    radians *= np.float32(2 * math.pi / 2**32)
    return radians


def swept_phase(frequency: np.ndarray, sample_rate: int) -> np.ndarray:
    """Phase in radians, [0, 2π), of an oscillator following frequency (Hz per sample); float32.

    Per-sample phase steps summed in a uint32 accumulator, which wraps once per cycle.
    """
    steps = (frequency * np.float32(2**32 / sample_rate)).astype(np.uint32)
    phase = np.cumsum(steps, dtype=np.uint32)
    radians = phase.astype(np.float32)
    radians *= np.float32(2 * math.pi / 2**32)
    return radians


def phase_of(cycles: np.ndarray) -> np.ndarray:
    """Phase in radians, [0, 2π), of a float64 array of cycles; float32."""
    whole = np.floor(cycles)
    np.subtract(cycles, whole, out=whole)
    radians = whole.astype(np.float32)
    radians *= _TWO_PI
    return radians


def sine(cycles: np.ndarray) -> np.ndarray:
    """sin(2π·cycles) in float32 (numpy's float32 sin is SIMD, its float64 sin is not)."""
    return np.sin(phase_of(cycles))


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """n samples of unit white gaussian noise: a random stretch of a fixed bank, maybe reversed.

    Drawing fresh gaussians costs more than all the rest of a clip; two stretches of a large
    constant bank mixed with random weights are just as white and differ from clip to clip.
    """
    bank = _gaussian_bank()
    bank = bank[::-1] if rng.random() < 0.5 else bank
    first, second = (int(rng.integers(_BANK_SIZE - n + 1)) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    mixed = bank[first : first + n] * np.float32(math.cos(angle))
    mixed += bank[second : second + n] * np.float32(math.sin(angle))
    return mixed


@functools.cache
def _gaussian_bank() -> np.ndarray:
    return np.random.default_rng(7_000_003).standard_normal(_BANK_SIZE, dtype=np.float32)


def rms(wave: np.ndarray) -> float:
    """Root mean square level (0 for an empty wave)."""
    return math.sqrt(float(np.dot(wave, wave)) / wave.size) if wave.size else 0.0


def place(content: np.ndarray, n: int, start: int) -> np.ndarray:
    """A float32 clip of n samples holding content from start on (cut at the end)."""
    clip = np.zeros(n, dtype=np.float32)
    piece = content[: max(n - start, 0)]
    clip[start : start + piece.size] = piece
    return clip


def add_at_snr(clip: np.ndarray, background: np.ndarray, signal_rms: float, snr_db: float) -> None:
    """Add background (any level) into clip in place at snr_db below signal_rms."""
    level = rms(background)
    if level > 0 and signal_rms > 0:
        clip += background * np.float32(signal_rms / level / 10 ** (snr_db / 20))


def to_peak(wave: np.ndarray, peak_db: float) -> np.ndarray:
    """wave (float32) scaled in place so its peak sits at peak_db dBFS; silence stays silent."""
    peak = max(float(wave.max()), -float(wave.min())) if wave.size else 0.0
    if peak > 0:
        wave *= np.float32(10 ** (peak_db / 20) / peak)
    return wave


def linear_ramp(n: int, *, rising: bool) -> np.ndarray:
    """n float32 values from 0 to 1 (or 1 to 0)."""
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    return ramp if rising else ramp[::-1]
