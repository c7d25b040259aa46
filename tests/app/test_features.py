"""Images encoded elsewhere (``mmr ingest --engine ray``): a batch may carry each file's
image features with the space they were computed in; the server takes them instead of
decoding and encoding, refuses another space as a whole (409) and a malformed feature
item by item, and an item so written is the item a local upload makes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from app.services.items import feature_space
from app.services.media import decode_upload
from tests.conftest import error_code
from tests.factories import image_case


def features_of(client: TestClient, data: bytes) -> list[float]:
    """What a cluster running the server's model computes: the same decode and encoder."""
    services = client.app.state.services  # type: ignore[attr-defined]
    media = decode_upload(data, settings=services.settings, embedder=services.embedder)
    [encoded] = services.embedder.encode_mixed(["image"], [media.payload])
    return [float(v) for v in encoded.raw[0]]


def space(client: TestClient) -> dict[str, Any]:
    return feature_space(client.app.state.services.embedder)  # type: ignore[attr-defined]


def batch(client: TestClient, name: str, files: list[bytes], **fields: Any) -> Any:
    parts = [("file", (f"{n}.png", data, "image/png")) for n, data in enumerate(files)]
    form = {k: json.dumps(v) for k, v in fields.items()}
    return client.post(f"/v1/collections/{name}/items/batch", files=parts, data=form)


def test_an_item_from_features_is_the_item_a_local_upload_makes(
    client: TestClient, collection: str
) -> None:
    picture = image_case("rgb_png")
    local = batch(client, collection, [picture], id=None)
    assert local.json()["results"][0]["status"] == 201
    local_id = local.json()["results"][0]["item"]["id"]
    remote = client.post(
        f"/v1/collections/{collection}/items/batch",
        files=[("file", ("r.png", picture, "image/png"))],
        data={
            "id": "remote",
            "features": json.dumps([features_of(client, picture)]),
            "space": json.dumps(space(client)),
        },
    )
    assert remote.status_code == 200, remote.text
    item = remote.json()["results"][0]
    assert item["status"] == 201 and item["item"]["modality"] == "image"
    hits = client.post(
        f"/v1/collections/{collection}/search", json={"item_id": local_id, "k": 2}
    ).json()["results"]
    scores = {hit["item"]["id"]: hit["score"] for hit in hits}
    assert scores["remote"] >= 0.999
    content = client.get(f"/v1/collections/{collection}/items/remote/content")
    assert content.content == picture  # the original is kept as for any upload


def test_features_of_another_space_are_refused_as_a_whole(
    client: TestClient, collection: str
) -> None:
    picture = image_case("rgb_png")
    feature = features_of(client, picture)
    for wrong in (
        {**space(client), "model": "open_clip:ViT-B-32"},
        {**space(client), "dim": len(feature) + 1},
        {**space(client), "preprocess": "pillow-full-decode"},
    ):
        refused = batch(client, collection, [picture], features=[feature], space=wrong)
        assert refused.status_code == 409 and error_code(refused) == "embedding_space_mismatch"
    unnamed = batch(client, collection, [picture], features=[feature])  # of an unknown space
    assert unnamed.status_code == 409 and error_code(unnamed) == "embedding_space_mismatch"
    count = client.get(f"/v1/collections/{collection}").json()["count"]
    assert count == 0


def test_a_malformed_feature_fails_its_own_item_only(client: TestClient, collection: str) -> None:
    picture, other = image_case("rgb_png"), image_case("rgb_png", seed=1)
    good = features_of(client, picture)
    zeros = [0.0] * len(good)
    files = [picture, other, picture, b"plain text, not an image"]
    fields = {"features": [good, None, zeros, good], "space": space(client)}
    reply = batch(client, collection, files, **fields)
    assert reply.status_code == 200, reply.text
    assert [r["status"] for r in reply.json()["results"]] == [201, 201, 422, 415]
    short = batch(client, collection, [picture], features=[good[:-1]], space=space(client))
    assert short.json()["results"][0]["status"] == 422
    wrong_count = batch(client, collection, [picture], features=[good, good], space=space(client))
    assert [r["status"] for r in wrong_count.json()["results"]] == [422]  # each file says why
    assert np.isfinite(good).all()
