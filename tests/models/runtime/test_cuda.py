"""The CUDA path: ``auto`` takes fp16, pixels are normalised on the GPU, the batcher serves the
same rows. Run where torch sees a GPU and skipped elsewhere (CI has none); the figures of such a
run are recorded in bench/results/ with the hardware named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.runtime.precision as precision
from models.encoders.registry import load_model
from tests.models.runtime.test_precision import min_cosine, probe_embeddings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("model_id", ["mmr-mini", "random:ViT-B-32"])
def test_auto_takes_fp16_on_cuda_with_the_cpus_fp32_embeddings(model_id: str) -> None:
    cpu = load_model(model_id, device="cpu", precision="fp32").encoder
    reference = probe_embeddings(cpu)
    cpu.close()
    loaded = load_model(model_id, device="cuda", precision="auto")
    encoder = loaded.encoder
    assert loaded.precision.name == "fp16", loaded.precision
    assert encoder.device == "cuda" and encoder.dtype == torch.float16
    assert next(encoder.model.parameters()).is_cuda
    got = probe_embeddings(encoder)
    assert set(got) == set(reference)  # every tower, mmr-mini's audio included
    for kind, rows in got.items():
        assert rows.dtype == np.float32
        assert min_cosine(rows, reference[kind]) >= precision.PROBE_MIN_COSINE, kind
    # The serving path: PIL images packed as uint8 on the CPU, normalised on the GPU, through
    # the batcher; the same rows as float inputs prepared on the CPU.
    images = precision.probe_images(encoder.image_size)
    packed = encoder.pack_images(images)
    assert packed.dtype == torch.uint8 and not packed.is_cuda
    served = encoder.encode_images(images)
    assert min_cosine(served, got["image"]) >= 0.999
    texts = encoder.encode_texts(list(precision.PROBE_TEXTS))
    assert min_cosine(texts, got["text"]) >= 0.999
    encoder.close()


def test_explicit_fp32_on_cuda_matches_the_cpu() -> None:
    cpu = load_model("mmr-mini", device="cpu", precision="fp32").encoder
    gpu = load_model("mmr-mini", device="cuda", precision="fp32").encoder
    assert gpu.dtype == torch.float32
    for kind, rows in probe_embeddings(gpu).items():
        assert min_cosine(rows, probe_embeddings(cpu)[kind]) >= 0.9999, kind
    cpu.close()
    gpu.close()
