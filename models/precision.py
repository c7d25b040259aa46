"""Which number format the encoders run in: fp32, bf16, fp16 or int8 (MMR_PRECISION).

``auto`` takes fp16 on CUDA; on a CPU, bf16 where the CPU has native bf16 (AVX512-BF16 / AMX,
as oneDNN reports it), else int8 image and text towers run by ONNX Runtime
(:mod:`models.int8`). Each only when a probe agrees: on a fixed set of inputs (8 seeded
synthetic images, 8 captions, audio windows for a model with an audio tower) every row of
every tower keeps a cosine of at least ``PROBE_MIN_COSINE`` to its fp32 embedding; int8 must
also beat fp32's time on those inputs (for a tiny model ONNX Runtime's gain can be nothing).
Otherwise fp32, logged. The fp32 weights are kept only while the probe runs (bf16 back to fp32
is lossy); int8 keeps them, for the audio tower and the image size.

Measured on the development machine (random:ViT-B-32 image tower, batch 16, torch 2.14 on 2
threads, oneDNN reports native bf16): fp32 15.6 images/s, bf16 77.3 images/s (x5), min cosine
0.99995 to fp32; with the 2 cores shared (load ~4) fp32 3.8-6.0, bf16 10.8-12.4 (x2-3).
int8 on a 2-core AMD EPYC without AVX-512 (same model and batch, ONNX Runtime 1.32): fp32
9.2 images/s, int8 ~20 (x2.2), probe min cosine 0.998.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from models import int8
from models.errors import ModelLoadError
from models.runtime import torch_threads

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
PROBE_MIN_COSINE = 0.99
PROBE_SEED = 0
PROBE_TEXTS = (
    "a photo of a dog",
    "a red circle on a white background",
    "two people walking on a beach at sunset",
    "the sound of rain on a roof",
    "un chat noir sur une chaise",
    "a diagram of a neural network",
    "close-up of a green leaf with water drops",
    "a crowded street market at night",
)


@dataclass(frozen=True)
class PrecisionChoice:
    """What the encoders run in, what was asked, and the probe's verdict when one ran."""

    name: str  # fp32 | bf16 | fp16 | int8
    requested: str
    probe_min_cosine: float | None = None
    reason: str = ""


FP32 = PrecisionChoice("fp32", "fp32", reason="as configured")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 matrix products natively (oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def probe_images(size: int, count: int = 8) -> list[Image.Image]:
    """Seeded synthetic RGB images: smooth gradients, blocks of colour and noise."""
    rng = np.random.default_rng(PROBE_SEED)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    images = []
    for i in range(count):
        base = rng.random(3, dtype=np.float32)[None, None, :]
        grad = (ramp[:, None, None] if i % 2 else ramp[None, :, None]) * rng.random(3)[None, None]
        pixels = 0.5 * base + 0.3 * grad + 0.2 * rng.random((size, size, 3))
        y0, x0 = rng.integers(0, size // 2, size=2)
        pixels[y0 : y0 + size // 3, x0 : x0 + size // 3] = rng.random(3)
        images.append(Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8), "RGB"))
    return images


def probe_waves(rate: int, window_s: float, count: int = 4) -> np.ndarray:
    """Seeded synthetic audio windows: tones, chirps and noise, (count, samples) float32."""
    rng = np.random.default_rng(PROBE_SEED)
    t = np.arange(round(rate * window_s), dtype=np.float64) / rate
    waves = [
        0.3 * np.sin(2 * np.pi * (200 + 400 * i) * t * (1 + 0.2 * i * t))
        + 0.05 * rng.standard_normal(t.shape)
        for i in range(count)
    ]
    return np.stack(waves).astype(np.float32)


def probe_inputs(encoder: Any) -> dict[str, torch.Tensor]:
    """The fixed prepared inputs of every tower the encoder runs."""
    inputs = {
        "image": encoder.prepare_images(probe_images(encoder.image_size)),
        "text": encoder.prepare_texts(list(PROBE_TEXTS)),
    }
    if "audio" in encoder.TOWERS:
        audio = encoder.audio
        inputs["audio"] = torch.from_numpy(probe_waves(audio.sample_rate, audio.window_s))
    return inputs


def to_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The model in ``dtype``, except submodules marked ``keeps_float32`` (in place)."""
    keep = {
        name: copy.deepcopy(module)
        for name, module in model.named_modules()
        if name and getattr(module, "keeps_float32", False)
    }
    model.to(dtype)
    for name, module in keep.items():
        model.set_submodule(name, module)
    return model


def choose_precision(
    encoder: Any, requested: str, *, cache_dir: Path | None = None
) -> PrecisionChoice:
    """Put the encoder in the requested precision (``auto``: probe first). int8 exports are
    kept under ``cache_dir``."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use {', '.join(PRECISIONS)}")
    if requested == "int8":
        _require_int8(encoder)
        encoder.use_runtimes(_int8_towers(encoder, cache_dir))
        return _chosen(encoder, PrecisionChoice("int8", "int8", reason="as configured"))
    if requested != "auto":
        if requested != "fp32":
            encoder.replace_model(to_dtype(encoder.model, DTYPES[requested]))
        return _chosen(encoder, PrecisionChoice(requested, requested, reason="as configured"))
    if str(encoder.device).startswith("cuda"):
        return _chosen(encoder, _probe(encoder, "fp16"))
    if cpu_has_native_bf16():
        return _chosen(encoder, _probe(encoder, "bf16"))
    if not int8.available():
        reason = "no native bf16 on the CPU, and ONNX Runtime is not installed for int8"
        return _chosen(encoder, PrecisionChoice("fp32", "auto", reason=reason))
    return _chosen(encoder, _probe_int8(encoder, cache_dir))


def _require_int8(encoder: Any) -> None:
    if str(encoder.device).startswith("cuda"):
        raise ModelLoadError(
            "MMR_PRECISION=int8 runs on the CPU (ONNX Runtime); on CUDA use fp16 or auto"
        )
    if not int8.available():
        raise ModelLoadError(
            "MMR_PRECISION=int8 needs onnxruntime and onnx (pip install onnxruntime onnx)"
        )


def _int8_towers(encoder: Any, cache_dir: Path | None, digest: str | None = None) -> dict[str, Any]:
    inputs = probe_inputs(encoder)
    return int8.int8_towers(
        encoder.model,
        model_id=encoder.model_id,
        examples={kind: (encoder.TOWERS[kind], inputs[kind][:2]) for kind in ("image", "text")},
        cache_dir=cache_dir,
        threads=torch_threads(),
        digest=digest,
    )


def timed(run: Callable[[], object], repeats: int = 2) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# The int8 probe's refusals, by (weights digest, threads): a process that loads the same
# weights again (tests, evaluation scripts) does not export them again to learn the same.
_INT8_REFUSED: dict[tuple[str, int], PrecisionChoice] = {}


def _probe_int8(encoder: Any, cache_dir: Path | None) -> PrecisionChoice:
    """int8 or fp32 for these weights; the verdict of the first start is kept beside the
    exports and taken at later starts: the probe's speed check is a measurement, and a
    restart must not flip a collection's embeddings between int8 and fp32."""
    digest, threads = int8.weights_digest(encoder.model), torch_threads()
    if (digest, threads) in _INT8_REFUSED:
        return _INT8_REFUSED[(digest, threads)]
    kept = None if cache_dir is None else _verdict_file(cache_dir, encoder, digest, threads)
    choice = _read_verdict(kept) if kept is not None else None
    if choice is not None and choice.name == "int8":
        try:
            encoder.use_runtimes(_int8_towers(encoder, cache_dir, digest))
        except Exception as exc:  # the exports went missing and cannot be made again
            log.warning("int8 towers of %s could not be loaded: %s", encoder.model_id, exc)
            choice = None
    if choice is None:
        choice = _measure_int8(encoder, cache_dir, digest)
        if kept is not None:
            _write_verdict(kept, choice)
    if choice.name == "fp32":
        _INT8_REFUSED[(digest, threads)] = choice
    return choice


def _verdict_file(cache_dir: Path, encoder: Any, digest: str, threads: int) -> Path:
    name = f"{int8.slug(encoder.model_id)}-{digest[:20]}-{threads}threads-{int8.FORMAT}.json"
    return int8.cache_root(cache_dir) / name


def _read_verdict(path: Path) -> PrecisionChoice | None:
    try:
        saved = json.loads(path.read_text())
        if saved["versions"] != int8.versions() or saved["name"] not in ("int8", "fp32"):
            return None
        cosine = saved["probe_min_cosine"]
        reason = f"{saved['reason']}; measured at an earlier start ({path.name})"
        return PrecisionChoice(saved["name"], "auto", cosine, reason)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_verdict(path: Path, choice: PrecisionChoice) -> None:
    verdict = {
        "name": choice.name,
        "probe_min_cosine": choice.probe_min_cosine,
        "reason": choice.reason,
        "versions": int8.versions(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(verdict))
    os.replace(partial, path)


def _measure_int8(encoder: Any, cache_dir: Path | None, digest: str) -> PrecisionChoice:
    inputs = probe_inputs(encoder)
    reference = {kind: encoder.forward(kind, batch) for kind, batch in inputs.items()}
    fp32_s = timed(lambda: [encoder.forward(k, b) for k, b in inputs.items()])
    try:
        towers = _int8_towers(encoder, cache_dir, digest)
    except Exception as exc:  # an op the exporter or the quantiser cannot take
        log.warning("int8 export of %s failed: %s", encoder.model_id, exc)
        return PrecisionChoice("fp32", "auto", reason=f"int8 export failed: {exc}")
    encoder.use_runtimes(towers)
    cosine = min(
        _min_cosine(encoder.forward(kind, batch), reference[kind]) for kind, batch in inputs.items()
    )
    int8_s = timed(lambda: [encoder.forward(k, b) for k, b in inputs.items()])
    threshold = PROBE_MIN_COSINE
    if cosine < threshold:
        encoder.use_runtimes({})
        return PrecisionChoice("fp32", "auto", cosine, f"int8 probe cosine < {threshold}")
    if int8_s >= fp32_s:
        encoder.use_runtimes({})
        reason = f"int8 is not faster here ({int8_s * 1000:.1f} ms vs fp32 {fp32_s * 1000:.1f} ms)"
        return PrecisionChoice("fp32", "auto", cosine, reason)
    reason = (
        f"no native bf16; int8 probe cosine >= {threshold}, "
        f"{fp32_s / int8_s:.1f}x fp32's speed on the probe"
    )
    return PrecisionChoice("int8", "auto", cosine, reason)


def _probe(encoder: Any, candidate: str) -> PrecisionChoice:
    inputs = probe_inputs(encoder)
    reference = {kind: encoder.forward(kind, batch) for kind, batch in inputs.items()}
    fp32_model = encoder.model
    encoder.replace_model(to_dtype(copy.deepcopy(fp32_model), DTYPES[candidate]))
    try:
        cosine = min(
            _min_cosine(encoder.forward(kind, batch), reference[kind])
            for kind, batch in inputs.items()
        )
    except RuntimeError as exc:  # an op without a kernel for that dtype on this device
        encoder.replace_model(fp32_model)
        return PrecisionChoice("fp32", "auto", reason=f"{candidate} failed: {exc}")
    threshold = PROBE_MIN_COSINE
    if cosine >= threshold:
        return PrecisionChoice(candidate, "auto", cosine, f"probe cosine >= {threshold}")
    encoder.replace_model(fp32_model)
    return PrecisionChoice("fp32", "auto", cosine, f"{candidate} probe cosine < {threshold}")


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


def _chosen(encoder: Any, choice: PrecisionChoice) -> PrecisionChoice:
    probe = (
        ""
        if choice.probe_min_cosine is None
        else f", probe min cosine {choice.probe_min_cosine:.5f}"
    )
    log.info(
        "%s runs in %s (MMR_PRECISION=%s: %s%s)",
        encoder.model_id,
        choice.name,
        choice.requested,
        choice.reason,
        probe,
    )
    return choice
