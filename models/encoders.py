"""Encoders: turn decoded media into raw feature vectors (before the aligner head)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

Modality = str  # "image" | "text" | "audio"


class Encoder(Protocol):
    """What the service needs from a model: ids, a dimension and batch encoders."""

    model_id: str
    dim: int
    modalities: tuple[Modality, ...]
    device: str

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

    def _model_fn(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        fn: Callable[[torch.Tensor], torch.Tensor] = getattr(self.model, name)
        return fn

    def _run(self, fn: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> np.ndarray:
        with self._lock, torch.inference_mode():
            out = fn(batch)
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)
