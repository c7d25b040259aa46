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
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.synth.world.french import to_french
from models.synth.world.images import (
    Scene,
    caption_scene,
    image_file_bytes,
    render_scene,
    sample_scene,
)
from models.synth.world.invented import translator
from models.synth.world.pairs import ImagePair, image_pairs
from models.synth.world.vocabulary import COLOURS, SHAPES, describes

NAME = "francais"
TRAIN, HELD, KNOWN = 600, 100, 300

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: what is measured here is learning, which no database changes (the jobs'
    SQL runs on both in tests/app/test_jobs.py); on both it cost two minutes more a run."""
    yield f"sqlite:///{tmp_path / 'mmr.sqlite3'}"


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


def test_a_collection_of_nothing_but_pairs_learns_without_forgetting(client: TestClient) -> None:
    """Issue 23's scenario: every colour and shape eight times, each picture paired with a
    caption in an invented language, nothing else stored. The job brings mmr-mini's own
    captions as anchors: the new words find their pictures, English still does."""
    name, translate, rng = "invented", translator(0), np.random.default_rng(23)
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    objects = [(c, s) for c in COLOURS for s in SHAPES for _ in range(8)]
    for start in range(0, len(objects), 64):
        chunk = list(enumerate(objects[start : start + 64], start))
        files, texts = [], []
        for i, (colour, shape) in chunk:
            drawn = dict(sample_scene(rng, two_shapes=0.0).objects[0]) | {
                "colour": colour,
                "shape": shape,
            }
            scene = Scene(objects=(drawn,))
            picture = render_scene(scene, np.random.default_rng([24, i]), style="shifted")
            files.append(("file", (f"p{i}", image_file_bytes(picture, rng)[0])))
            caption = caption_scene(scene, np.random.default_rng([25, i])).text
            texts.append({"text": translate(caption), "id": f"c{i}", "metadata": {"group": i}})
        form = {
            "id": [f"p{i}" for i, _ in chunk],
            "metadata": json.dumps([{"group": i} for i, _ in chunk]),
        }
        response = client.post(f"/v1/collections/{name}/items/batch", files=files, data=form)
        assert response.status_code == 200, response.text
        response = client.post(f"/v1/collections/{name}/items/batch", json=texts)
        assert response.status_code == 200, response.text

    def precision_at_3(english: bool) -> float:
        shares = []
        for colour, shape in dict.fromkeys(objects):
            text = f"a {colour} {shape}"
            body = {"text": text if english else translate(text), "k": 3, "modalities": ["image"]}
            found = client.post(f"/v1/collections/{name}/search", json=body).json()["results"]
            shares.append(
                np.mean([objects[int(r["item"]["id"][1:])] == (colour, shape) for r in found])
            )
        return float(np.mean(shares))

    new_before, english_before = precision_at_3(False), precision_at_3(True)
    job = client.post(
        "/v1/jobs", json={"type": "finetune", "collection": name, "pair_key": "group"}
    )
    job_id = job.json()["id"]
    deadline = time.monotonic() + 600
    while (done := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, done
        time.sleep(0.1)
    assert done["status"] == "succeeded", done
    metrics = done["metrics"]
    assert metrics["activated"] is True and metrics["kept"] is True
    assert metrics["anchors_brought"] == {"text": 2048}
    assert metrics["anchor_check"] == {"queries": 512, "gallery": 512, "labelled": True}
    gained = precision_at_3(False) - new_before
    kept = precision_at_3(True) - english_before
    assert gained >= 0.30, (new_before, gained)
    assert kept >= -0.05, (english_before, kept)
