"""Audio encoders and long recordings: a clip longer than the window becomes overlapping segments.

Every audio encoder (mmr-mini's own tower, a CLAP audio tower) sees fixed windows. A long file
is cut into windows that overlap by ``window - hop`` seconds, the last one aligned to the end
so that no tail is lost and no segment is mostly padding. Each segment keeps its feature and
its ``[start, end]`` in seconds: search can answer with the moment, not just the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class AudioSegments:
    """One recording's segment features (n, raw_dim) and their spans (n, 2) in seconds."""

    features: np.ndarray
    spans: np.ndarray

    def __post_init__(self) -> None:
        if len(self.features) != len(self.spans) or len(self.features) == 0:
            raise ValueError("a recording has at least one segment, one span per feature")


class AudioEncoder(Protocol):
    """What the service needs from an audio tower."""

    model_id: str
    dim: int  # width of the raw feature, before the aligner head
    sample_rate: int
    window_s: float
    hop_s: float

    def encode_audio(self, waves: Sequence[np.ndarray]) -> list[AudioSegments]:
        """Each mono wave at ``sample_rate`` -> its segments' raw features and spans."""
        ...

    def close(self) -> None:
        """Stop the tower's batcher thread, if it has one (at shutdown)."""
        ...


def segment_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the windows that cover a clip: every ``hop``, the last one end-aligned."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n_samples:
        starts = np.append(starts, n_samples - window)
    return starts


def cut_segments(
    wave: np.ndarray, *, rate: int, window_s: float, hop_s: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """A wave cut into windows (views, the only short one a clip shorter than a window)
    and their spans in seconds, shape (n, 2)."""
    window = max(1, round(window_s * rate))
    hop = max(1, round(hop_s * rate))
    starts = segment_starts(len(wave), window, hop)
    pieces = [wave[s : s + window] for s in starts]
    ends = starts + np.array([len(p) for p in pieces])
    spans = np.stack([starts, ends], axis=1).astype(np.float64) / rate
    return pieces, spans


def in_forwards(
    pieces: Sequence[np.ndarray],
    per_forward: int,
    encode: Callable[[Sequence[np.ndarray]], np.ndarray],
) -> np.ndarray:
    """The pieces' features, encoded a forward's worth (``per_forward`` windows) at a time.

    A long recording's windows are many times its own samples (an hour at 16 kHz, 4 s windows
    every 2 s: 460 MB of prepared float32 windows against 230 MB of wave), so each call of
    ``encode`` prepares only the windows of one forward, and the request holds one forward's
    worth of prepared inputs whatever the recording's length.
    """
    if per_forward < 1:
        raise ValueError("per_forward must be at least 1")
    rows = [encode(pieces[i : i + per_forward]) for i in range(0, len(pieces), per_forward)]
    return np.concatenate(rows)


def pooled(vectors: np.ndarray) -> np.ndarray:
    """One vector for a whole recording: the mean of its segment vectors (not normalised)."""
    return np.asarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[-1]).mean(axis=0)
