"""Encoders: turn decoded media into raw feature vectors (before the aligner head)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from models.errors import UnsupportedMediaError
from models.mini.audio import windows
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

    @property
    def audio_rate(self) -> int | None:
        """Sample rate audio must be decoded to, or None without an audio tower."""
        ...

    def encode_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Raw audio features of mono waves at ``audio_rate``, shape (n, dim), float32."""
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

    @property
    def audio_rate(self) -> int | None:
        """CLIP has no ears: no audio tower."""
        return None

    def encode_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Refused: this model has no audio tower."""
        raise UnsupportedMediaError(f"{self.model_id} has no audio tower")

    def _model_fn(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        fn: Callable[[torch.Tensor], torch.Tensor] = getattr(self.model, name)
        return fn

    def _run(self, fn: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> np.ndarray:
        with self._lock, torch.inference_mode():
            out = fn(batch)
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)


class MiniEncoder(OpenClipEncoder):
    """mmr-mini: the open_clip towers plus an audio tower in the same space."""

    def __init__(self, *, model_id: str, model: MiniModel, device: str) -> None:
        self.mini = model
        super().__init__(
            model_id=model_id,
            model=model,
            preprocess=model.preprocess,
            tokenizer=model.tokenizer,
            device=device,
        )
        self.modalities = ("image", "text", "audio")

    @property
    def audio_rate(self) -> int | None:
        """The audio tower's sample rate."""
        return self.mini.audio_cfg.sample_rate

    def encode_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Each wave is cut into windows; a clip's feature is the mean of its windows'."""
        if not waves:
            return np.zeros((0, self.dim), dtype=np.float32)
        cuts = [windows(np.asarray(w, dtype=np.float32), self.mini.audio_cfg) for w in waves]
        batch = torch.from_numpy(np.concatenate(cuts)).to(self.device)
        per_window = self._run(self._model_fn("encode_audio"), batch)
        bounds = np.cumsum([0] + [len(c) for c in cuts])
        return np.stack(
            [per_window[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)]
        ).astype(np.float32)
