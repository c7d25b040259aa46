"""The audio tower of mmr-mini: a log-mel front end in torch and a compact conv + GRU encoder.

Waves are 16 kHz mono float32. A clip is padded or cut into fixed windows; the front end
has no learned parameters, so training can precompute it once per clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class AudioConfig:
    """Front end and tower sizes; stored with the weights."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    window_seconds: float = 4.0
    width: int = 128
    top_db: float = 80.0

    @property
    def window_samples(self) -> int:
        """Samples in one encoder window."""
        return int(self.sample_rate * self.window_seconds)

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return asdict(self)


def mel_filterbank(cfg: AudioConfig) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1)."""

    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = to_mel(np.array([cfg.f_min, cfg.f_max]))
    hz = to_hz(np.linspace(edges[0], edges[1], cfg.n_mels + 2))
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


class LogMel(nn.Module):
    """Waves (batch, samples) -> log-mel (batch, n_mels, frames) scaled to about [-1, 1].

    Levels are relative to each clip's loudest bin, so loudness does not change the input.
    """

    # Stays float32 when the model goes to bf16/fp16 (models.runtime.precision): CPUs have no
    # bf16 FFT, and the dB scale needs float32's range.
    keeps_float32 = True

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.window: torch.Tensor
        self.mel: torch.Tensor
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waves.float(),
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop,
            window=self.window,
            center=True,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel, power)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        peak = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - self.cfg.top_db)
        return (db - peak) / (self.cfg.top_db / 2) + 1.0


def _block(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


class AudioTower(nn.Module):
    """Log-mel windows -> raw features in the shared space's width.

    Mel bins are the channels of 1-D convolutions over time: absolute pitch matters here
    (a low tone is not a high one) and it keeps the tower cheap on CPUs. A bidirectional
    GRU over the downsampled frames counts and orders events (beeps, chirps).
    """

    def __init__(self, cfg: AudioConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.front = LogMel(cfg)
        self.convs = nn.Sequential(
            _block(cfg.n_mels, w, 5, 1),
            _block(w, w, 5, 2),
            _block(w, w, 3, 2),
        )
        self.gru = nn.GRU(w, w // 2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * w, embed_dim)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """Waves (batch, window_samples) -> features (batch, embed_dim)."""
        return self.encode_mels(self.front(waves).to(self.proj.weight.dtype))

    def encode_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """Precomputed front-end output (batch, n_mels, frames) -> features."""
        x = self.convs(mels).transpose(1, 2)
        x, _ = self.gru(x)
        pooled = torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=1)
        out: torch.Tensor = self.proj(pooled)
        return out


def pad_window(piece: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """One encoder window: the piece's first ``window_samples``, zero-padded when shorter."""
    out = np.zeros(cfg.window_samples, dtype=np.float32)
    head = np.asarray(piece, dtype=np.float32)[: cfg.window_samples]
    out[: len(head)] = head
    return out
