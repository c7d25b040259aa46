"""The image/text dual encoder: the :class:`Encoder` protocol the service needs, and
:class:`OpenClipEncoder`, an open_clip model with its preprocessing, tokenizer and batchers.

Encoders turn decoded media into raw feature vectors, before the aligner head. Audio towers
are :class:`models.encoders.audio.AudioEncoder` s: a model's own (mmr-mini,
``models.encoders.mini.encoder``) or a CLAP (``models.encoders.clap``) bridged into the space
by an aligner head.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from PIL import Image

from models.media.pixels import Pixels
from models.runtime.batcher import BatchConfig, MicroBatcher, Pending
from models.runtime.streams import Streams, default_count
from models.runtime.threads import torch_threads, use_torch_threads

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

    def expect(self, kind: Modality) -> Pending:
        """Announce inputs on the way to a tower's batcher (see ``enqueue_images``)."""
        ...

    def enqueue_images(self, images: Sequence[Image.Image], pending: Pending) -> Future[np.ndarray]:
        """``encode_images`` without waiting: the future of its rows."""
        ...

    def close(self) -> None:
        """Stop the encoder's batcher threads (at shutdown)."""
        ...


class RuntimeTower(Protocol):
    """A tower run outside torch (``models.runtime.onnx.OnnxTower``): prepared inputs and the
    threads its forward may use -> (n, dim) float32."""

    def __call__(self, batch: torch.Tensor, threads: int | None = None) -> np.ndarray: ...


class OpenClipEncoder:
    """An open_clip model with its own eval preprocessing and tokenizer.

    Encoding is split in three (as Infinity does): ``prepare_*`` (preprocess, tokenize) runs in
    the caller's thread, ``forward`` runs the model, and ``encode_*`` joins them through one
    :class:`MicroBatcher` per tower, so that concurrent requests share forward passes.
    """

    # Tower name -> the model's method; MiniEncoder adds its audio tower.
    TOWERS: ClassVar[dict[Modality, str]] = {"image": "encode_image", "text": "encode_text"}

    def __init__(
        self,
        *,
        model_id: str,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        device: str,
        batching: BatchConfig | None = None,
    ) -> None:
        self.model_id = model_id
        self.model = model.eval()
        self.preprocess = preprocess
        self.pixels = Pixels.of(preprocess)  # None: run the transform whole, per image
        self.tokenizer = tokenizer
        self.device = device
        self.modalities: tuple[Modality, ...] = ("image", "text")
        # Forwards across this model's towers share the cores torch was given
        # (MMR_TORCH_THREADS): a lone one takes them all, under load MMR_BATCH_STREAMS run at
        # once on a share each (models.runtime.streams).
        batching = batching or BatchConfig()
        threads = torch_threads()
        self.streams = Streams(
            threads=threads, count=batching.streams or default_count(device, threads)
        )
        self._batchers_lock = threading.Lock()  # not the forward slots: queueing never waits
        self._batching = dataclasses.replace(batching, streams=self.streams.count)
        self._batchers: dict[Modality, MicroBatcher] = {}
        self._closed = False
        # Towers that run outside torch (int8 through ONNX Runtime), by modality.
        self.runtimes: dict[Modality, RuntimeTower] = {}
        self.dim = int(self.forward("text", self.prepare_texts(["probe"])).shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype: float32, or bfloat16 / float16 after a precision choice."""
        return next(self.model.parameters()).dtype

    @property
    def forward_rows(self) -> int:
        """Most rows one forward takes (MMR_BATCH_SIZE)."""
        return self._batching.max_batch

    @property
    def image_size(self) -> int:
        """Shorter side of the image tower's input, in pixels."""
        # open_clip models have .visual; MiniModel keeps its open_clip model in .clip.
        owner: Any = getattr(self.model, "clip", self.model)
        size: Any = owner.visual.image_size
        return int(min(size) if isinstance(size, tuple | list) else size)

    def prepare_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> the image tower's input (n, 3, H, W) float32, on the CPU."""
        if self.pixels is None:
            return torch.stack([self.preprocess(im) for im in images])
        return self.pixels.normalize(self.pixels.pack(images))

    def pack_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> what ``forward`` takes for them, at the least cost per image: uint8
        pixels that it normalises per batch (``models.media.pixels``), or the tower's input."""
        if self.pixels is None:
            return self.prepare_images(images)
        return self.pixels.pack(images)

    def prepare_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> token ids (n, context), on the CPU."""
        return self.tokenizer(list(texts))

    def forward(self, kind: Modality, batch: torch.Tensor, *, alone: bool = True) -> np.ndarray:
        """One forward of a tower on prepared inputs, no batcher: (n, dim) float32.
        ``alone``: no other batch waits for this model (it may take every core). Images may
        come packed (``pack_images``): they are normalised here, once for the batch."""
        runtime = self.runtimes.get(kind)
        if runtime is not None:  # picks its session by the threads its slot has
            return self.streams.run(
                lambda threads: runtime(self._unpacked(kind, batch), threads), alone=alone
            )
        fn: Callable[[torch.Tensor], torch.Tensor] = getattr(self.model, self.TOWERS[kind])
        batch = batch.to(self.device)

        def run(threads: int) -> np.ndarray:  # torch's threads are set for this thread
            with torch.inference_mode():  # per thread: entered where the forward runs
                inputs = self._unpacked(kind, batch)
                # Pixels follow the weights' dtype; audio waves stay float32 for the FFT.
                if kind != "audio" and inputs.is_floating_point():
                    inputs = inputs.to(self.dtype)
                out = fn(inputs)
            return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)

        return self.streams.run(run, alone=alone)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw image features, shape (n, dim), float32."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.submit("image", lambda: self.pack_images(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw text features, shape (n, dim), float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.submit("text", lambda: self.prepare_texts(texts))

    def expect(self, kind: Modality) -> Pending:
        """Announce inputs on their way to the tower's batcher, which waits for them as for a
        caller still preparing (``MicroBatcher.announce``): taken before handing the request
        to the thread that prepares it, so that the batch it joins is not bounded by how many
        threads prepare."""
        return self._batcher(kind).announce()

    def enqueue_images(self, images: Sequence[Image.Image], pending: Pending) -> Future[np.ndarray]:
        """``encode_images`` without a thread waiting for the forward: the images packed here
        (on one torch thread) and queued under ``pending`` (from ``expect("image")``); the
        future of their (n, dim) rows. Raises ``Overloaded`` when the queue is full."""
        if not images:
            raise ValueError("no images to encode")
        try:
            batch = _on_one_thread(lambda: self.pack_images(images))
        except BaseException:
            pending.withdraw()
            raise
        return pending.enqueue(batch)

    def submit(self, kind: Modality, prepare: Callable[[], torch.Tensor]) -> np.ndarray:
        """Inputs prepared in this thread, then through the tower's batcher (started on
        first use), which waits for callers still preparing theirs."""
        return self._batcher(kind).run(lambda: _on_one_thread(prepare))

    def replace_model(self, model: torch.nn.Module) -> None:
        """Swap the weights (a precision choice), between forwards."""
        with self.streams.exclusive():
            self.model = model.eval()

    def use_runtimes(self, runtimes: dict[Modality, RuntimeTower]) -> None:
        """Run these towers outside torch (a precision choice), between forwards; the torch
        model keeps the others (and answers ``image_size``)."""
        with self.streams.exclusive():
            self.runtimes = dict(runtimes)

    def close(self) -> None:
        """Stop the batchers' threads; later encodes raise RuntimeError."""
        with self._batchers_lock:
            self._closed = True
            batchers = list(self._batchers.values())
        for batcher in batchers:
            batcher.close()
        self.streams.close()

    def _batcher(self, kind: Modality) -> MicroBatcher:
        with self._batchers_lock:
            if self._closed:
                raise RuntimeError(f"{self.model_id} is closed (the server shuts down)")
            if kind not in self._batchers:
                self._batchers[kind] = MicroBatcher(
                    functools.partial(self._forward_of, kind), name=kind, config=self._batching
                )
            return self._batchers[kind]

    def _unpacked(self, kind: Modality, batch: torch.Tensor) -> torch.Tensor:
        if kind == "image" and self.pixels is not None and batch.dtype == torch.uint8:
            return self.pixels.normalize(batch)
        return batch

    def _forward_of(self, kind: Modality, batch: torch.Tensor, *, alone: bool) -> np.ndarray:
        # Looked up per call, so that a wrapped ``forward`` (tests, metrics) is the one run.
        return self.forward(kind, batch, alone=alone)


def _on_one_thread(prepare: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Decoding and preprocessing use one torch thread: the cores belong to the forwards, and
    an OpenMP team per request thread would slow every forward (``models.runtime.threads``)."""
    use_torch_threads(1)
    return prepare()
