"""Signal and pixel measurements the world tests check generated data with."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image
from scipy import signal


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    """The frequency (Hz) of the strongest spectral peak."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * sample_rate / wave.size)


def _spectrogram(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, power[frequency, frame]) with ~16 ms windows and ~4 ms hops."""
    window = 2 ** round(np.log2(0.016 * sample_rate))
    frequencies, _, stft = signal.stft(
        wave, sample_rate, nperseg=window, noverlap=window * 3 // 4, boundary=None
    )
    return frequencies, np.abs(stft) ** 2


def peak_track(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The peak frequency of every loud frame whose peak stands 20 dB over its median."""
    frequencies, power = _spectrogram(wave, sample_rate)
    energy = power.sum(axis=0)
    tonal = power.max(axis=0) > 100 * np.median(power, axis=0)
    return frequencies[np.argmax(power[:, tonal & (energy > energy.max() / 100)], axis=0)]


def count_bursts(wave: np.ndarray, sample_rate: int) -> int:
    """How many separate stretches the clip's strongest frequency band is loud in."""
    _, power = _spectrogram(wave, sample_rate)
    strongest = int(np.argmax(power.sum(axis=1)))
    band = power[max(strongest - 2, 0) : strongest + 3].sum(axis=0)
    loud = band > band.max() / 10
    return int(np.count_nonzero(loud[1:] & ~loud[:-1]) + loud[0])


def peak_dbfs(wave: np.ndarray) -> float:
    """The clip's peak level in dBFS."""
    return 20 * float(np.log10(np.abs(wave).max()))


def foreground(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Boolean mask of pixels clearly unlike the (plain) background colour."""
    pixels = np.asarray(image, dtype=np.int16)
    return np.abs(pixels - np.array(background, dtype=np.int16)).sum(axis=2) > 60


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of a mask as fractions of its width and height."""
    ys, xs = np.nonzero(mask)
    return float(xs.mean() + 0.5) / mask.shape[1], float(ys.mean() + 0.5) / mask.shape[0]


def median_hsv(image: Image.Image, mask: np.ndarray) -> tuple[float, float, float]:
    """Median colour of the masked pixels as (hue in degrees, saturation, value)."""
    r, g, b = np.median(np.asarray(image)[mask], axis=0) / 255
    hue, sat, val = colorsys.rgb_to_hsv(r, g, b)
    return hue * 360, sat, val
