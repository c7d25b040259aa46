"""Encoders: turn decoded media into raw feature vectors (before the aligner head).

An :class:`Encoder` is the image/text dual encoder; audio towers are
:class:`models.audio.AudioEncoder` s, either a model's own (mmr-mini) or a CLAP bridged
into the space by an aligner head.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from models.audio import AudioSegments, cut_segments
from models.mini.audio import pad_window
from models.mini.model import MiniModel

Modality = str  # "image" | "text" | "audio"


class Encoder(Protocol):
    """What the service needs from a model: ids, a dimension and batch encoders."""

    model_id: str
    dim: int
    modalities: tuple[Modality, ...]
    device: str

    @property
    def image_size(self) -> int:
        """Shorter side of the image tower's input, in pixels."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw image features, shape (n, dim), float32."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw text features, shape (n, dim), float32."""
        ...


class OpenClipEncoder:
    """An open_clip model with its own eval preprocessing and tokenizer."""

    def __init__(
        self,
        *,
        model_id: str,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        device: str,
    ) -> None:
        self.model_id = model_id
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.modalities: tuple[Modality, ...] = ("image", "text")
        # One forward pass at a time: concurrent passes only fight over the same cores.
        self._lock = threading.Lock()
        self.dim = 0
        self.dim = int(self.encode_texts(["probe"]).shape[1])  # the model's output width

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw image features, shape (n, dim), float32."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self._run(self._model_fn("encode_image"), batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw text features, shape (n, dim), float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self._run(self._model_fn("encode_text"), tokens)

    @property
    def image_size(self) -> int:
        """Shorter side of the image tower's input, in pixels."""
        # open_clip models have .visual; MiniModel keeps its open_clip model in .clip.
        owner: Any = getattr(self.model, "clip", self.model)
        size: Any = owner.visual.image_size
        return int(min(size) if isinstance(size, tuple | list) else size)

    def _model_fn(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        fn: Callable[[torch.Tensor], torch.Tensor] = getattr(self.model, name)
        return fn

    def _run(self, fn: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> np.ndarray:
        with self._lock, torch.inference_mode():
            out = fn(batch)
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


class MiniEncoder(OpenClipEncoder):
    """mmr-mini's image and text towers; its own audio tower is ``.audio``."""

    def __init__(self, *, model_id: str, model: MiniModel, device: str) -> None:
        self.mini = model
        super().__init__(
            model_id=model_id,
            model=model,
            preprocess=model.preprocess,
            tokenizer=model.tokenizer,
            device=device,
        )
        self.audio = MiniAudioEncoder(self)


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

    def encode_audio(self, waves: Sequence[np.ndarray]) -> list[AudioSegments]:
        """Each wave's segments (zero-padded to a window when shorter) and their spans."""
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
        pieces = np.stack([pad_window(p, cfg) for pieces, _ in cuts for p in pieces])
        batch = torch.from_numpy(pieces).to(self._owner.device)
        owner = self._owner
        features = owner._run(owner._model_fn("encode_audio"), batch)
        bounds = np.cumsum([0] + [len(spans) for _, spans in cuts])
        return [
            AudioSegments(features[a:b], spans)
            for (a, b), (_, spans) in zip(itertools.pairwise(bounds), cuts, strict=True)
        ]
