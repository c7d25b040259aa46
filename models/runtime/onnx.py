"""Towers run by ONNX Runtime, in int8 or in fp32: CPU fast paths that
``models.runtime.precision`` weighs against torch's fp32 and bf16.

A tower (``encode_image`` or ``encode_text`` of the model) is exported to ONNX with torch's
exporter and run by ONNX Runtime sessions on torch's thread count. ``int8``: its weights
quantised by ONNX Runtime's dynamic quantiser (per output channel, 7 bits; activations are
quantised per batch at run time). ``fp32-onnx``: the exported graph as it is, so the same
numbers as torch's up to rounding, with ONNX Runtime's graph fusions (convolution and batch
norm in one) and the whole forward in C++: torch runs a model op by op from Python and takes
the GIL back after each, which a busy server's other threads hold. Audio towers stay in
torch: their FFT front end is not worth the export.

An export takes seconds for a small model and longer for a CLIP, so both files (the export
and its quantised copy) are kept under the model cache (``<data dir>/models/onnx``), named by
a digest of the model's weights: a restart loads them at once, and other weights (another
checkpoint, a fine-tuned CLIP) never meet a stale file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.runtime.notices import without_notice

log = logging.getLogger(__name__)

# Part of every cached file's name, by precision: a new export recipe never loads an old file.
FORMATS = {"int8": "int8-v1", "fp32-onnx": "fp32-v1"}
OPSET = 17


def available() -> bool:
    """Whether ONNX Runtime and its quantiser can be imported."""
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return True


class _Tower(torch.nn.Module):
    """One method of a model as a module's forward (what the exporter traces)."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = getattr(self.model, self.method)(batch)
        return out


class OnnxTower:
    """A tower in ONNX Runtime sessions: prepared inputs -> (n, dim) float32.

    A lone forward runs in a session on every thread; forwards under load
    (``models.runtime.streams``) run at once in a second session on their share of the threads,
    called from each forward's own thread: narrow runs side by side outrun one session on
    every thread, the more so beside a busy Python thread (a server decoding the next
    request). The second session costs the tower's weights again."""

    def __init__(self, path: Path, *, threads: int, narrow_threads: int | None = None) -> None:
        self.path = path
        self.threads = max(1, threads)
        # Spinning worker threads stay on in the wide session (ONNX Runtime's default):
        # turning it off cost 30% of the throughput at batch 16 on 2 cores, 12% at batch 1.
        self.wide = _session(path, self.threads)
        self.narrow_threads = min(max(1, narrow_threads or self.threads), self.threads)
        self.narrow = (
            self.wide
            if self.narrow_threads == self.threads
            else _session(path, self.narrow_threads)
        )
        self.input = self.wide.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor, threads: int | None = None) -> np.ndarray:
        """Features of a prepared batch, in the session for ``threads`` (default: every
        thread)."""
        narrow = threads is not None and threads <= self.narrow_threads
        session = self.narrow if narrow else self.wide
        out = session.run(None, {self.input: batch.detach().cpu().numpy()})[0]
        return np.ascontiguousarray(out, dtype=np.float32)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 1: runs in the calling thread, no pool
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(FORMATS["int8"].encode())  # the digest's recipe, kept as it was
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_tower(
    model: torch.nn.Module, method: str, example: torch.Tensor, outs: dict[str, Path]
) -> None:
    """Export ``model.<method>`` to ONNX (batch dimension dynamic) and write it, atomically,
    to ``outs["fp32-onnx"]`` and quantised to int8 to ``outs["int8"]`` (either may be
    absent)."""
    parent = next(iter(outs.values())).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".export-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        # Grad on: under no_grad nn.MultiheadAttention takes a fused fast path with no ONNX op.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation notices
            torch.onnx.export(
                _Tower(model, method).eval(),
                (example,),
                str(fp32),
                input_names=["input"],
                output_names=["features"],
                dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        if "int8" in outs:
            # Its advice to pre-process the graph first is for static (calibrated) quantisation.
            with without_notice("pre-processing before quantization"):
                _quantize(fp32, int8)
        for name, made in (("fp32-onnx", fp32), ("int8", int8)):
            if name in outs:
                with open(made, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(made, outs[name])


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel 7-bit weights: without VNNI the u8 x s8 products saturate their int16
    # sums at 8 bits; ViT-B-32's image tower then fell to a cosine of 0.98 (0.9996 now).
    quantize_dynamic(
        str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
    )


def onnx_towers(
    model: torch.nn.Module,
    *,
    precision: str,
    model_id: str,
    examples: dict[str, tuple[str, torch.Tensor]],
    cache_dir: Path | None,
    threads: int,
    narrow_threads: int | None = None,
    digest: str | None = None,
) -> dict[str, OnnxTower]:
    """Sessions in ``precision`` (int8 or fp32-onnx) for the towers in ``examples`` (kind ->
    (method, a prepared batch)), exported on first use and kept under ``cache_dir/onnx`` (a
    temporary folder when None); ``narrow_threads``: the threads of a forward under load
    (:class:`OnnxTower`). One export makes the files of both precisions."""
    digest = (digest or weights_digest(model))[:20]
    with tempfile.TemporaryDirectory(prefix="mmr-onnx-") as scratch:
        root = cache_root(cache_dir) if cache_dir is not None else Path(scratch)
        towers = {}
        for kind, (method, example) in examples.items():
            paths = {
                name: root / f"{slug(model_id)}-{kind}-{digest}-{fmt}.onnx"
                for name, fmt in FORMATS.items()
            }
            if not paths[precision].exists():
                log.info("exporting %s's %s tower to ONNX (once per weights)", model_id, kind)
                export_tower(model, method, example, paths)
            # The session reads the whole file now: a temporary folder may go afterwards.
            towers[kind] = OnnxTower(
                paths[precision], threads=threads, narrow_threads=narrow_threads
            )
    return towers


def slug(model_id: str) -> str:
    """A model id as a file name part."""
    return re.sub(r"[^A-Za-z0-9]+", "-", model_id).strip("-")[:60]


def cache_root(cache_dir: Path) -> Path:
    """Where a model cache keeps ONNX exports."""
    return cache_dir / "onnx"


def versions() -> str:
    """torch and ONNX Runtime versions: a verdict measured with others is measured again."""
    import onnxruntime

    return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"


def cached_files(cache_dir: Path, precision: str = "int8") -> Sequence[Path]:
    """The exports in ``precision`` kept under a model cache."""
    root = cache_root(cache_dir)
    return sorted(root.glob(f"*-{FORMATS[precision]}.onnx")) if root.is_dir() else []
