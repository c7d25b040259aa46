"""mmr-mini as an encoder: its image and text towers through the open_clip encoder's batchers,
and its own audio tower beside them, already in the shared space."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar, cast

import numpy as np
import torch

from models.encoders.audio import AudioSegments, cut_segments, in_forwards
from models.encoders.mini.audio import pad_window
from models.encoders.mini.model import MiniModel
from models.encoders.openclip import Modality, OpenClipEncoder
from models.runtime.batcher import BatchConfig


class MiniEncoder(OpenClipEncoder):
    """mmr-mini's image and text towers; its own audio tower is ``.audio``."""

    TOWERS: ClassVar[dict[Modality, str]] = {**OpenClipEncoder.TOWERS, "audio": "encode_audio"}

    def __init__(
        self,
        *,
        model_id: str,
        model: MiniModel,
        device: str,
        batching: BatchConfig | None = None,
    ) -> None:
        super().__init__(
            model_id=model_id,
            model=model,
            preprocess=model.preprocess,
            tokenizer=model.tokenizer,
            device=device,
            batching=batching,
        )
        self.audio = MiniAudioEncoder(self)

    @property
    def mini(self) -> MiniModel:
        """The model, typed (its dtype may change with a precision choice)."""
        return cast(MiniModel, self.model)


class MiniAudioEncoder:
    """mmr-mini's audio tower: 4 s windows every 2 s, features already in the shared space."""

    def __init__(self, owner: MiniEncoder) -> None:
        self._owner = owner
        cfg = owner.mini.audio_cfg
        self.model_id = owner.model_id  # the model's own tower: one id for all modalities
        self.dim = owner.dim
        self.sample_rate = cfg.sample_rate
        self.window_s = cfg.window_seconds
        self.hop_s = cfg.window_seconds / 2

    def close(self) -> None:
        """Nothing of its own: the owner's batchers serve this tower too."""

    def prepare_windows(self, pieces: Sequence[np.ndarray]) -> torch.Tensor:
        """Every piece zero-padded to one window: (n_windows, window_samples) float32."""
        cfg = self._owner.mini.audio_cfg
        return torch.from_numpy(np.stack([pad_window(p, cfg) for p in pieces]))

    def encode_audio(self, waves: Sequence[np.ndarray]) -> list[AudioSegments]:
        """Each wave's segments (zero-padded to a window when shorter) and their spans; the
        windows are prepared a forward's worth at a time (``in_forwards``)."""
        if not waves:
            return []
        cfg = self._owner.mini.audio_cfg
        cuts = [
            cut_segments(
                np.asarray(w, np.float32),
                rate=cfg.sample_rate,
                window_s=self.window_s,
                hop_s=self.hop_s,
            )
            for w in waves
        ]
        pieces = [p for pieces, _ in cuts for p in pieces]
        features = in_forwards(
            pieces,
            self._owner.forward_rows,
            lambda chunk: self._owner.submit("audio", lambda: self.prepare_windows(chunk)),
        )
        bounds = np.cumsum([0] + [len(spans) for _, spans in cuts])
        return [
            AudioSegments(features[a:b], spans)
            for (a, b), (_, spans) in zip(itertools.pairwise(bounds), cuts, strict=True)
        ]
