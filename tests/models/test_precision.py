"""Precision: ``auto`` takes bf16 on a CPU with native bf16 when a fixed-input probe agrees."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import models.precision as precision
from models.registry import load_model

needs_bf16 = pytest.mark.skipif(
    not precision.cpu_has_native_bf16(), reason="this CPU has no native bf16"
)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def probe_embeddings(encoder: Any) -> dict[str, np.ndarray]:
    return {
        kind: encoder.forward(kind, batch)
        for kind, batch in precision.probe_inputs(encoder).items()
    }


def check_auto_is_bf16_and_close(model_id: str) -> None:
    reference = probe_embeddings(load_model(model_id, device="cpu").encoder)
    loaded = load_model(model_id, device="cpu", precision="auto")
    assert loaded.precision.name == "bf16"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine >= precision.PROBE_MIN_COSINE
    assert loaded.encoder.dtype == torch.bfloat16
    got = probe_embeddings(loaded.encoder)
    assert set(got) == set(reference)
    for kind, rows in got.items():
        assert rows.dtype == np.float32
        assert min_cosine(rows, reference[kind]) >= 0.99, kind
    # The serving path (batcher, PIL images in) gives the same rows as the probe's forward.
    images = precision.probe_images(loaded.encoder.image_size)
    served = loaded.encoder.encode_images(images)
    assert min_cosine(served, got["image"]) >= 0.999
    loaded.encoder.close()


@needs_bf16
def test_mini_auto_is_bf16_and_keeps_its_embeddings() -> None:
    check_auto_is_bf16_and_close("mmr-mini")


@needs_bf16
@pytest.mark.slow
def test_vit_b_32_auto_is_bf16_and_keeps_its_embeddings() -> None:
    check_auto_is_bf16_and_close("random:ViT-B-32")


@needs_bf16
def test_auto_falls_back_to_fp32_when_the_probe_disagrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(precision, "PROBE_MIN_COSINE", 1.0)
    reference = probe_embeddings(load_model("mmr-mini", device="cpu").encoder)
    loaded = load_model("mmr-mini", device="cpu", precision="auto")
    assert loaded.precision.name == "fp32"
    assert loaded.precision.probe_min_cosine is not None
    assert loaded.precision.probe_min_cosine < 1.0
    assert loaded.encoder.dtype == torch.float32
    # The fp32 weights are the originals, not a round trip through bf16.
    for kind, rows in probe_embeddings(loaded.encoder).items():
        np.testing.assert_array_equal(rows, reference[kind])


def test_explicit_precisions_are_honoured() -> None:
    fp32 = load_model("random:mmr-tiny", device="cpu")
    assert fp32.precision.name == "fp32" and fp32.precision.probe_min_cosine is None
    bf16 = load_model("random:mmr-tiny", device="cpu", precision="bf16")
    assert bf16.precision.name == "bf16" and bf16.encoder.dtype == torch.bfloat16
    out = bf16.encoder.encode_texts(["a red square"])
    assert out.dtype == np.float32
    assert min_cosine(out, fp32.encoder.encode_texts(["a red square"])) > 0.98
    fp32.encoder.close()
    bf16.encoder.close()


def test_auto_without_native_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    loaded = load_model("random:mmr-tiny", device="cpu", precision="auto")
    assert loaded.precision.name == "fp32" and loaded.precision.probe_min_cosine is None
    assert loaded.encoder.dtype == torch.float32
