"""Encoder micro-batching through the API: a full queue answers 429, accepted calls are right."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code


def test_a_full_encoder_queue_answers_429_and_accepted_calls_get_their_vectors(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch_queue=2, batch_size=4, batch_wait_ms=1.0, precision="fp32")
    texts = [f"caption {i}" for i in range(16)]
    with TestClient(create_app(settings)) as client:
        expected = {t: client.post("/v1/embed", json={"texts": [t]}).json() for t in texts}
        encoder = client.app.state.services.embedder.encoder  # type: ignore[attr-defined]
        forward = encoder.forward

        def slow_forward(kind: str, batch: torch.Tensor, *, alone: bool = True) -> np.ndarray:
            time.sleep(0.2)  # a busy model: requests pile up behind it
            return forward(kind, batch, alone=alone)

        encoder.forward = slow_forward
        start = threading.Barrier(len(texts))

        def one(text: str) -> object:
            start.wait()
            return client.post("/v1/embed", json={"texts": [text]})

        with ThreadPoolExecutor(max_workers=len(texts)) as pool:
            responses = list(pool.map(one, texts))

    refused = [r for r in responses if r.status_code == 429]
    accepted = [(t, r) for t, r in zip(texts, responses, strict=True) if r.status_code == 200]
    assert refused and accepted
    assert len(refused) + len(accepted) == len(texts)
    for response in refused:
        assert error_code(response) == "overloaded"
        assert "MMR_BATCH_QUEUE" in response.json()["error"]["message"]
        assert response.headers["retry-after"] == "1"
    for text, response in accepted:
        np.testing.assert_allclose(
            response.json()["embeddings"], expected[text]["embeddings"], atol=1e-5
        )


def test_models_reports_the_precision(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(precision="bf16"))) as client:
        active = client.get("/v1/models").json()["active"]
    assert active["precision"] == "bf16"
    assert active["precision_probe_min_cosine"] is None


def test_int8_serves_through_onnx_runtime(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(precision="int8")
    with TestClient(create_app(settings)) as client:
        active = client.get("/v1/models").json()["active"]
        embedded = client.post("/v1/embed", json={"texts": ["a red square", "a blue circle"]})
    assert active["precision"] == "int8"
    assert embedded.status_code == 200
    vectors = np.asarray(embedded.json()["embeddings"])
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # The export is kept under the data dir's model cache for the next start.
    assert list((settings.data_dir / "models" / "onnx").glob("*-text-*.onnx"))
