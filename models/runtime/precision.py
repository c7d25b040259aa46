"""Which number format the encoders run in (MMR_PRECISION), and the ``auto`` rule that picks it.

``fp32``, ``bf16`` and ``fp16`` are torch dtypes; ``int8`` and ``fp32-onnx`` run the image and
text towers in ONNX Runtime (:mod:`models.runtime.onnx`: quantised weights, or fp32 without
torch's Python between ops) and leave audio towers in torch.

``auto`` (the server's default; this is the one place in the code the rule is written, the
manual's is docs/models.md#precision):

- on CUDA: fp16, if the probe below keeps its cosine, else fp32;
- on a CPU: the candidates it can run (bf16 where the CPU does bf16 natively, AVX512-BF16 or
  AMX as oneDNN reports it; int8 and fp32-onnx where ONNX Runtime is installed) each run the
  probe: fixed inputs (8 seeded synthetic images, 8 captions, audio windows when the model has
  an audio tower) on which every row of every tower must keep a cosine of at least
  :attr:`Probe.min_cosine` to fp32. Of those that do, the fastest on the probe (each tower
  timed on its own, :func:`timed_towers`) wins if it beats fp32 by more than
  :attr:`Probe.min_speedup`; otherwise fp32. The log says which won and why.

Measured, not assumed, because the winner depends on the CPU (int8 with VNNI but no AMX, bf16
with AMX, fp32-onnx for a model as small as mmr-mini). The first start's verdict is kept beside
the model cache, per weights, thread count, candidates and library versions, so that a restart
never moves a collection's embeddings to another format. The fp32 weights are kept only while
the probe runs (bf16 back to fp32 is lossy); the ONNX Runtime formats keep them for the audio
tower and the image size. The thresholds, the timer and the verdicts of this process are a
:class:`Probe`, passed in (tests pass their own).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from models.errors import ModelLoadError
from models.runtime import onnx
from models.runtime.threads import torch_threads

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8", "fp32-onnx"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "fp32-onnx")
# Formats whose image and text towers run in ONNX Runtime sessions (models.runtime.onnx).
RUNTIME_PRECISIONS = ("int8", "fp32-onnx")
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
PROBE_MIN_COSINE = 0.99
# A candidate must run the probe more than this much faster than fp32 to be taken: for a model
# as small as mmr-mini the formats are within the timing noise of each other (three starts of
# the same weights picked fp32, bf16 and int8), and a format switch is only worth a clear gain.
PROBE_MIN_SPEEDUP = 1.2
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

    name: str  # fp32 | bf16 | fp16 | int8 | fp32-onnx
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
    encoder: Any, requested: str, *, cache_dir: Path | None = None, probe: Probe | None = None
) -> PrecisionChoice:
    """Put the encoder in the requested precision (``auto``: ``probe`` first, by default this
    process's). int8 exports and ``auto``'s verdicts are kept under ``cache_dir``."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use {', '.join(PRECISIONS)}")
    if requested in RUNTIME_PRECISIONS:
        _require_runtime(encoder, requested)
        encoder.use_runtimes(_runtime_towers(encoder, requested, cache_dir))
        return _chosen(encoder, PrecisionChoice(requested, requested, reason="as configured"))
    if requested != "auto":
        if requested != "fp32":
            encoder.replace_model(to_dtype(encoder.model, DTYPES[requested]))
        return _chosen(encoder, PrecisionChoice(requested, requested, reason="as configured"))
    probe = PROCESS_PROBE if probe is None else probe
    if str(encoder.device).startswith("cuda"):
        return _chosen(encoder, _probe(encoder, "fp16", probe))
    return _chosen(encoder, _fastest_on_cpu(encoder, cache_dir, probe))


def cpu_candidates() -> tuple[str, ...]:
    """The candidates of ``auto``'s rule (the module docstring) that this machine can run."""
    has_onnx = onnx.available()
    return tuple(
        name
        for name, usable in (
            ("bf16", cpu_has_native_bf16()),
            ("int8", has_onnx),
            ("fp32-onnx", has_onnx),
        )
        if usable
    )


def _require_runtime(encoder: Any, name: str) -> None:
    if str(encoder.device).startswith("cuda"):
        raise ModelLoadError(
            f"MMR_PRECISION={name} runs on the CPU (ONNX Runtime); on CUDA use fp16 or auto"
        )
    if not onnx.available():
        raise ModelLoadError(
            f"MMR_PRECISION={name} needs onnxruntime and onnx (pip install onnxruntime onnx)"
        )


def _runtime_towers(
    encoder: Any, name: str, cache_dir: Path | None, digest: str | None = None
) -> dict[str, Any]:
    inputs = probe_inputs(encoder)
    return onnx.onnx_towers(
        encoder.model,
        precision=name,
        model_id=encoder.model_id,
        examples={kind: (encoder.TOWERS[kind], inputs[kind][:2]) for kind in ("image", "text")},
        cache_dir=cache_dir,
        threads=torch_threads(),
        narrow_threads=encoder.streams.narrow_threads,
        digest=digest,
    )


# A candidate's time is the best of calls repeated for at least this long (and at least twice):
# ViT-B-32's probe takes ~1 s a call, mmr-mini's ~15 ms, where two calls were too few (two
# starts of the same weights on the same machine took int8 and fp32-onnx).
PROBE_MIN_TIME_S = 0.5


def timed(run: Callable[[], object], repeats: int = 2) -> float:
    """Best wall time of at least ``repeats`` calls, repeated for ``PROBE_MIN_TIME_S``."""
    best = float("inf")
    began = time.perf_counter()
    done = 0
    while done < repeats or time.perf_counter() - began < PROBE_MIN_TIME_S:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        done += 1
    return best


def timed_towers(
    encoder: Any,
    inputs: dict[str, torch.Tensor],
    *,
    best_of: Callable[[Callable[[], object]], float] = timed,
) -> float:
    """The probe's time: every tower's ``best_of`` forwards on its probe inputs
    (:func:`probe_inputs`), summed.

    Each tower is timed on its own, as a server runs it (batches of one tower back to back):
    timed one after another, ONNX Runtime's pools of the tower just run spin on beside the
    next tower's forward, and fp32-onnx looked slower than fp32 for a model that it serves
    faster."""
    return sum(
        best_of(functools.partial(encoder.forward, kind, batch)) for kind, batch in inputs.items()
    )


Timer = Callable[[Any, dict[str, torch.Tensor]], float]
VerdictKey = tuple[str, int, tuple[str, ...]]  # weights digest, threads, candidates


@dataclass(frozen=True)
class Probe:
    """What ``auto``'s rule (the module docstring) measures with: its two thresholds, the
    timer of a format on the probe's inputs, and the verdicts already reached."""

    min_cosine: float = PROBE_MIN_COSINE
    min_speedup: float = PROBE_MIN_SPEEDUP
    timer: Timer = timed_towers
    # By (weights digest, threads, candidates): loading the same weights again in one process
    # (tests, evaluation scripts) measures nothing.
    verdicts: dict[VerdictKey, PrecisionChoice] = field(default_factory=dict)


# The probe of loads that pass none: one verdict cache for this process.
PROCESS_PROBE = Probe()


def _fastest_on_cpu(encoder: Any, cache_dir: Path | None, probe: Probe) -> PrecisionChoice:
    """``auto`` on a CPU, applied to the encoder; a verdict kept in ``probe`` or in the model
    cache (an earlier start's) is taken without measuring."""
    candidates = cpu_candidates()
    if not candidates:
        reason = "no native bf16 on the CPU, and ONNX Runtime is not installed for int8"
        return PrecisionChoice("fp32", "auto", reason=reason)
    digest, threads = onnx.weights_digest(encoder.model), torch_threads()
    key = (digest, threads, candidates)
    kept = None if cache_dir is None else _verdict_file(cache_dir, encoder, digest, threads)
    choice = probe.verdicts.get(key) or (_read_verdict(kept, candidates) if kept else None)
    if choice is not None:
        try:
            _apply(encoder, choice.name, cache_dir, digest)
        except Exception as exc:  # the ONNX exports went missing and cannot be made again
            log.warning("%s in %s could not be set up: %s", encoder.model_id, choice.name, exc)
            choice = None
    if choice is None:
        choice = _measure(encoder, candidates, cache_dir, digest, probe)
        if kept is not None:
            _write_verdict(kept, choice, candidates)
    probe.verdicts[key] = choice
    return choice


def _apply(encoder: Any, name: str, cache_dir: Path | None, digest: str) -> None:
    """Run the encoder in ``name`` (from fp32)."""
    if name in RUNTIME_PRECISIONS:
        encoder.use_runtimes(_runtime_towers(encoder, name, cache_dir, digest))
    elif name != "fp32":
        encoder.replace_model(to_dtype(encoder.model, DTYPES[name]))


def _verdict_file(cache_dir: Path, encoder: Any, digest: str, threads: int) -> Path:
    name = f"{onnx.slug(encoder.model_id)}-{digest[:20]}-{threads}threads.json"
    return cache_dir / "precision" / name


def _versions(candidates: tuple[str, ...]) -> str:
    """What the measurement ran on: a verdict measured with other versions is made again."""
    runtime = any(name in RUNTIME_PRECISIONS for name in candidates)
    return onnx.versions() if runtime else f"torch {torch.__version__}"


def _read_verdict(path: Path, candidates: tuple[str, ...]) -> PrecisionChoice | None:
    try:
        saved = json.loads(path.read_text())
        if saved["versions"] != _versions(candidates) or saved["candidates"] != list(candidates):
            return None  # measured with other libraries, or among other formats
        if saved["name"] not in ("fp32", *candidates):
            return None
        cosine = saved["probe_min_cosine"]
        reason = f"{saved['reason']}; measured at an earlier start ({path.name})"
        return PrecisionChoice(saved["name"], "auto", cosine, reason)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_verdict(path: Path, choice: PrecisionChoice, candidates: tuple[str, ...]) -> None:
    verdict = {
        "name": choice.name,
        "probe_min_cosine": choice.probe_min_cosine,
        "reason": choice.reason,
        "candidates": list(candidates),
        "versions": _versions(candidates),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(verdict))
    os.replace(partial, path)


@dataclass(frozen=True)
class _Trial:
    """One candidate on the probe: its lowest cosine to fp32 and its time, or why it failed."""

    name: str
    cosine: float | None = None
    seconds: float | None = None
    failure: str = ""
    towers: dict[str, Any] | None = None  # ONNX Runtime sessions, kept for the winner


def _measure(
    encoder: Any, candidates: tuple[str, ...], cache_dir: Path | None, digest: str, probe: Probe
) -> PrecisionChoice:
    """Every candidate on the probe's inputs against fp32; the winner is left applied."""
    inputs = probe_inputs(encoder)
    reference = _run_all(encoder, inputs)
    fp32_s = probe.timer(encoder, inputs)
    trials = [
        _trial(encoder, name, inputs, reference, cache_dir, digest, timer=probe.timer)
        for name in candidates
    ]
    threshold = probe.min_cosine
    passed = [
        t
        for t in trials
        if t.cosine is not None and t.cosine >= threshold and t.seconds is not None
    ]
    best = min(passed, key=lambda t: t.seconds or 0.0, default=None)
    summary = "; ".join(_described(t, fp32_s) for t in trials)
    if best is None or best.seconds is None or best.seconds * probe.min_speedup >= fp32_s:
        cosines = [t.cosine for t in trials if t.cosine is not None]
        reason = (
            f"no candidate keeps cosine >= {threshold} and beats fp32 by more than "
            f"{probe.min_speedup}x ({summary})"
        )
        return PrecisionChoice("fp32", "auto", max(cosines, default=None), reason)
    if best.towers is not None:
        encoder.use_runtimes(best.towers)
    else:
        _apply(encoder, best.name, cache_dir, digest)
    return PrecisionChoice(best.name, "auto", best.cosine, f"the fastest on the probe ({summary})")


def _trial(
    encoder: Any,
    name: str,
    inputs: dict[str, torch.Tensor],
    reference: dict[str, np.ndarray],
    cache_dir: Path | None,
    digest: str,
    *,
    timer: Timer,
) -> _Trial:
    """Measure one candidate, then put the encoder back in fp32."""
    fp32_model = encoder.model
    towers = None
    try:
        if name in RUNTIME_PRECISIONS:
            towers = _runtime_towers(encoder, name, cache_dir, digest)
            encoder.use_runtimes(towers)
        else:  # on a copy: bf16 back to fp32 is lossy
            encoder.replace_model(to_dtype(copy.deepcopy(fp32_model), DTYPES[name]))
        got = _run_all(encoder, inputs)
        cosine = min(_min_cosine(got[kind], reference[kind]) for kind in reference)
        return _Trial(name, cosine, timer(encoder, inputs), towers=towers)
    except Exception as exc:  # an op the exporter, quantiser or a dtype kernel cannot take
        log.warning("%s in %s failed on the probe: %s", encoder.model_id, name, exc)
        return _Trial(name, failure=f"{name} failed: {exc}")
    finally:
        encoder.use_runtimes({})
        encoder.replace_model(fp32_model)


def _described(trial: _Trial, fp32_s: float) -> str:
    if trial.failure:
        return trial.failure
    assert trial.cosine is not None and trial.seconds is not None
    speed = fp32_s / trial.seconds if trial.seconds > 0 else float("inf")
    return f"{trial.name}: cosine {trial.cosine:.5f}, {speed:.2f}x fp32"


def _probe(encoder: Any, candidate: str, probe: Probe) -> PrecisionChoice:
    """``candidate`` when it keeps the probe's cosine, whatever its speed (fp16 on CUDA)."""
    inputs = probe_inputs(encoder)
    trial = _trial(
        encoder, candidate, inputs, _run_all(encoder, inputs), None, "", timer=probe.timer
    )
    threshold = probe.min_cosine
    if trial.cosine is None:
        return PrecisionChoice("fp32", "auto", reason=trial.failure)
    if trial.cosine < threshold:
        reason = f"{candidate} probe cosine < {threshold}"
        return PrecisionChoice("fp32", "auto", trial.cosine, reason)
    _apply(encoder, candidate, None, "")
    return PrecisionChoice(candidate, "auto", trial.cosine, f"probe cosine >= {threshold}")


def _run_all(encoder: Any, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Every tower of the encoder on the probe's inputs, as it runs now."""
    return {kind: encoder.forward(kind, batch) for kind, batch in inputs.items()}


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
    # The start-up block says it (app.lifespan); here for a model loaded later, at debug.
    log.debug(
        "%s runs in %s (MMR_PRECISION=%s: %s%s)",
        encoder.model_id,
        choice.name,
        choice.requested,
        choice.reason,
        probe,
    )
    return choice
