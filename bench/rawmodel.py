"""The model without the service: JPEG bytes -> decode -> preprocess -> one forward pass.

Baselines of the embedding benchmark run through here, in the benchmark's own process while
no server runs. The encoder is used through ``pack_images`` (or ``prepare_images``) and
``forward`` when it has them (the service's path without its batcher) and otherwise through
open_clip's ``preprocess`` and ``model.encode_image``, cast by hand for bf16.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.encoders.registry import load_model
from models.media.image import decode_image

try:  # older commits (bench run against them) have no thread rules
    from models.runtime.threads import configure_torch_threads
except ImportError:  # pragma: no cover
    configure_torch_threads = None  # type: ignore[assignment]

MAX_PIXELS = 64_000_000  # the server's default MMR_MAX_IMAGE_PIXELS


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty when /proc/cpuinfo is unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fallback_precision(precision: str) -> str:
    """What ``auto`` means when the model code cannot say: bf16 where the CPU has it."""
    if precision != "auto":
        return precision
    return "bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"


class RawModel:
    """An encoder's image path with no batcher, no HTTP, no locks of the service."""

    def __init__(
        self, model_id: str, precision: str, cache_dir: Path | None, device: str = "cpu"
    ) -> None:
        kwargs: dict[str, Any] = {"device": device, "cache_dir": cache_dir}
        native = "precision" in inspect.signature(load_model).parameters
        if configure_torch_threads is not None:
            # The server's thread rules in this process too: torch on one thread here, the
            # model's forwards on its wide thread, so that the only OpenMP team spins (a
            # second team would throttle both, and the ceiling would be measured low).
            configure_torch_threads(0)
        if native:
            kwargs["precision"] = precision
        loaded = load_model(model_id, **kwargs)
        encoder: Any = loaded.encoder  # the batcher-free methods are not in the Protocol
        self.encoder = encoder
        self.model_id = model_id
        self.image_size = int(self.encoder.image_size)
        self.native = native and all(
            hasattr(self.encoder, name) for name in ("prepare_images", "forward")
        )
        if self.native:
            choice = getattr(loaded, "precision", None)
            self.precision = str(getattr(choice, "name", precision))
            self._prepare: Callable[[list[Image.Image]], torch.Tensor] = getattr(
                self.encoder, "pack_images", self.encoder.prepare_images
            )
            self._forward: Callable[[torch.Tensor], Any] = self._native_forward
        else:
            self.precision = fallback_precision(precision)
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
                self.precision, torch.float32
            )
            model = self.encoder.model
            self._model = copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model
            self._dtype = dtype
            self._prepare = self._open_clip_prepare
            self._forward = self._open_clip_forward

    def _native_forward(self, batch: torch.Tensor) -> Any:
        return self.encoder.forward("image", batch)

    def _open_clip_prepare(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.encoder.preprocess(im) for im in images])

    def _open_clip_forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = self._model.encode_image(batch.to(self.encoder.device, self._dtype))
        return out

    def close(self) -> None:
        """Stop whatever threads the encoder started."""
        closer = getattr(self.encoder, "close", None)
        if callable(closer):
            closer()

    def decode(self, data: bytes) -> Image.Image:
        """The service's decode: reduced DCT scale for JPEGs (twice the input side), then
        averaged down to under twice the input side."""
        return decode_image(
            data, max_pixels=MAX_PIXELS, min_side=2 * self.image_size, shrink_to=2 * self.image_size
        )

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Decoded images -> the encoder's input batch."""
        return self._prepare(list(images))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw features of decoded images, float32 (n, dim)."""
        out = self._forward(self._prepare(list(images)))
        if isinstance(out, torch.Tensor):
            out = out.float().cpu().numpy()
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_jpegs(self, jpegs: Sequence[bytes]) -> np.ndarray:
        """Decode, preprocess and encode in one forward pass."""
        return self.embed([self.decode(j) for j in jpegs])


def timed_rate(step: Callable[[], int], budget_s: float, minimum: int = 2) -> dict[str, float]:
    """Run ``step`` (returns items done) after one warm-up call until the budget is spent."""
    step()
    done, calls = 0, 0
    t0 = time.perf_counter()
    while calls < minimum or time.perf_counter() - t0 < budget_s:
        done += step()
        calls += 1
    elapsed = time.perf_counter() - t0
    return {"per_s": done / elapsed, "items": done, "calls": calls, "seconds": elapsed}


def batched_rates(
    raw: RawModel, jpegs: Sequence[bytes], batch_sizes: Sequence[int], budget_s: float
) -> list[dict[str, Any]]:
    """Images/s of decode + preprocess + forward per batch size (batch 1 = a naive server)."""
    rows = []
    for size in batch_sizes:
        batch = [jpegs[i % len(jpegs)] for i in range(size)]

        def step(batch: list[bytes] = batch) -> int:
            raw.embed_jpegs(batch)
            return len(batch)

        rate = timed_rate(step, budget_s)
        rows.append({"batch": size, "images_per_s": rate["per_s"], "images": rate["items"]})
    return rows
