"""A fine-tune job teaches mmr-mini a vocabulary it never saw, and it forgets nothing.

mmr-mini was trained on English captions only. The collection holds 600 pictures paired
(by a `group` key) with French captions, plus English captions of other pictures: what the
collection already knew. One fine-tune job later, French queries for 100 new scenes find
their pictures far more often, and English queries for them do as well as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.synth.world.french import to_french
from models.synth.world.images import image_file_bytes
from models.synth.world.pairs import ImagePair, image_pairs
from models.synth.world.vocabulary import describes

NAME = "francais"
TRAIN, HELD, KNOWN = 600, 100, 300

pytestmark = pytest.mark.slow


def world(n: int, seed: int) -> list[ImagePair]:
    return image_pairs(n, seed=seed, style="shifted", two_shapes=0.0)


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(model="mmr-mini", job_poll_s=0.1, torch_threads=2)
    with TestClient(create_app(settings)) as c:
        yield c


def post_batch(client: TestClient, **kwargs: Any) -> None:
    response = client.post(f"/v1/collections/{NAME}/items/batch", **kwargs)
    assert response.status_code == 200, response.text
    assert all(r["status"] == 201 for r in response.json()["results"])


def fill(client: TestClient) -> None:
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    pairs = world(TRAIN, seed=101)
    for start in range(0, TRAIN, 100):
        chunk = list(enumerate(pairs[start : start + 100], start))
        rng = np.random.default_rng(start)
        files = [("file", (f"p{i}", image_file_bytes(p.image, rng)[0])) for i, p in chunk]
        meta = [{"group": i, "objects": list(p.scene.objects)} for i, p in chunk]
        form = {"id": [f"img{i}" for i, _ in chunk], "metadata": json.dumps(meta)}
        post_batch(client, files=files, data=form)
        texts = [
            {"text": to_french(p.caption.text), "id": f"fr{i}", "metadata": {"group": i}}
            for i, p in chunk
        ]
        post_batch(client, json=texts)
    # What the collection already held: English captions of other pictures (no pairs).
    known = [{"text": p.caption.text, "id": f"en{i}"} for i, p in enumerate(world(KNOWN, 303))]
    for start in range(0, KNOWN, 100):
        post_batch(client, json=known[start : start + 100])


def recall_at_5(client: TestClient, queries: list[tuple[str, ImagePair]]) -> tuple[float, int]:
    """Share of queries with a picture the caption describes among the top 5 pictures."""
    hits, versions = 0, set()
    for text, pair in queries:
        body = {"text": text, "k": 5, "modalities": ["image"]}
        found = client.post(f"/v1/collections/{NAME}/search", json=body).json()
        versions.add(found["aligner_version"])
        hits += any(
            describes(pair.caption.mentions, r["item"]["metadata"]["objects"])
            for r in found["results"]
        )
    (version,) = versions
    return hits / len(queries), version


def test_one_job_teaches_french_without_forgetting_english(client: TestClient) -> None:
    fill(client)
    held = world(HELD, seed=202)  # scenes no pair showed
    french = [(to_french(p.caption.text), p) for p in held]
    english = [(p.caption.text, p) for p in held]
    fr_before, v1 = recall_at_5(client, french)
    en_before, _ = recall_at_5(client, english)
    body = {"type": "finetune", "collection": NAME, "pair_key": "group"}
    job = client.post("/v1/jobs", json=body).json()
    deadline = time.monotonic() + 600
    while (job := client.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    metrics = job["metrics"]
    # Served at once: the first search after the job ends uses the new version.
    fr_after, v2 = recall_at_5(client, french)
    en_after, _ = recall_at_5(client, english)
    assert metrics["activated"] is True and v2 == metrics["aligner_version"] == v1 + 1
    assert metrics["anchors"]["text"] == KNOWN and metrics["pairs_used"] == TRAIN
    # The job's own held-out pairs (exact picture only) agree with the held-out scenes.
    assert metrics["after"]["a_to_b@5"] - metrics["before"]["a_to_b@5"] >= 0.2
    assert fr_after - fr_before >= 0.30, (fr_before, fr_after)
    assert en_before - en_after <= 0.05, (en_before, en_after)
