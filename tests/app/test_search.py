"""Search: by text, file, item and vector; filters before the cut; image self-match."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import error_code
from tests.factories import IMAGE_MODES, image_case


def search(client: TestClient, name: str, **body: object) -> dict:  # type: ignore[type-arg]
    response = client.post(f"/v1/collections/{name}/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def ids(result: dict) -> list[str]:  # type: ignore[type-arg]
    return [hit["item"]["id"] for hit in result["results"]]


def add_texts(client: TestClient, name: str, texts: dict[str, tuple[str, dict]]) -> None:  # type: ignore[type-arg]
    batch = [{"id": i, "text": t, "metadata": m} for i, (t, m) in texts.items()]
    results = client.post(f"/v1/collections/{name}/items/batch", json=batch).json()["results"]
    assert all(r["status"] == 201 for r in results), results


def test_text_finds_its_own_text_first(client: TestClient, collection: str) -> None:
    add_texts(client, collection, {f"t{i}": (f"sentence number {i}", {}) for i in range(10)})
    result = search(client, collection, text="sentence number 7", k=3)
    assert result["query_modality"] == "text"
    assert ids(result)[0] == "t7"
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    scores = [hit["score"] for hit in result["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 3


@pytest.mark.parametrize("mode", IMAGE_MODES)
def test_uploaded_image_finds_itself_first(client: TestClient, collection: str, mode: str) -> None:
    for seed in range(3):
        other = image_case(mode, seed=seed + 1)
        client.post(f"/v1/collections/{collection}/items", files={"file": ("o", other)})
    data = image_case(mode)
    added = client.post(
        f"/v1/collections/{collection}/items", files={"file": ("q", data)}, data={"id": "me"}
    )
    assert added.status_code == 201, added.text
    response = client.post(f"/v1/collections/{collection}/search", files={"file": ("q", data)})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["query_modality"] == "image"
    assert ids(result)[0] == "me"
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_filters_apply_before_the_cut(client: TestClient, collection: str) -> None:
    texts = {f"n{i}": (f"noise {i}", {"kind": "noise"}) for i in range(40)}
    texts |= {f"s{i}": (f"signal {i}", {"kind": "signal", "n": i}) for i in range(4)}
    add_texts(client, collection, texts)
    result = search(client, collection, text="noise 1", k=4, filter={"kind": "signal"})
    assert sorted(ids(result)) == ["s0", "s1", "s2", "s3"]
    any_of = search(client, collection, text="noise 1", k=10, filter={"n": [1, 3, 99]})
    assert sorted(ids(any_of)) == ["s1", "s3"]
    both = search(client, collection, text="x", k=10, filter={"kind": "signal", "n": 2})
    assert ids(both) == ["s2"]
    none = search(client, collection, text="x", filter={"kind": "absent"})
    assert none["results"] == []


def test_filter_value_types_compare_like_json(client: TestClient, collection: str) -> None:
    add_texts(
        client,
        collection,
        {
            "int": ("a", {"v": 1}),
            "str": ("b", {"v": "1"}),
            "bool": ("c", {"v": True}),
            "list": ("d", {"v": ["x", 2.0]}),
            "null": ("e", {"v": None}),
        },
    )
    assert ids(search(client, collection, text="a", filter={"v": 1.0})) == ["int"]
    assert ids(search(client, collection, text="a", filter={"v": "1"})) == ["str"]
    assert ids(search(client, collection, text="a", filter={"v": True})) == ["bool"]
    assert ids(search(client, collection, text="a", filter={"v": 2})) == ["list"]
    assert ids(search(client, collection, text="a", filter={"v": None})) == ["null"]


def test_modalities_filter(client: TestClient, collection: str) -> None:
    add_texts(client, collection, {f"t{i}": (f"text {i}", {}) for i in range(5)})
    client.post(
        f"/v1/collections/{collection}/items",
        files={"file": ("p", image_case("rgb_png"))},
        data={"id": "img"},
    )
    result = search(client, collection, text="text 1", k=5, modalities=["image"])
    assert ids(result) == ["img"]
    multipart = client.post(
        f"/v1/collections/{collection}/search",
        files={"file": ("q", image_case("rgb_png"))},
        data={"k": "2", "modalities": "text", "filter": json.dumps({})},
    ).json()
    assert len(multipart["results"]) == 2
    assert all(hit["item"]["modality"] == "text" for hit in multipart["results"])


def test_item_and_vector_queries(client: TestClient, collection: str) -> None:
    add_texts(client, collection, {f"t{i}": (f"thing {i}", {}) for i in range(5)})
    by_item = search(client, collection, item_id="t2", k=2)
    assert ids(by_item)[0] == "t2"
    assert by_item["query_modality"] == "text"
    vector = client.post("/v1/embed", json={"texts": ["thing 4"]}).json()["embeddings"][0]
    by_vector = search(client, collection, vector=[v * 3 for v in vector], k=1)
    assert ids(by_vector) == ["t4"]
    assert by_vector["query_modality"] == "vector"
    assert by_vector["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_k_larger_than_the_collection(client: TestClient, collection: str) -> None:
    add_texts(client, collection, {"a": ("a", {}), "b": ("b", {})})
    assert len(search(client, collection, text="a", k=1000)["results"]) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"text": "a", "item_id": "b"}, 422),
        ({"text": "a", "k": 0}, 422),
        ({"text": "a", "k": 1001}, 422),
        ({"text": "a", "modalities": ["smell"]}, 422),
        ({"text": "a", "filter": {"k": {"nested": 1}}}, 422),
        ({"vector": [0.0] * 64}, 422),
        ({"vector": [1.0] * 3}, 409),
        ({"item_id": "missing"}, 404),
        ({"text": "a", "unknown": 1}, 422),
    ],
)
def test_bad_queries(client: TestClient, collection: str, body: dict, status: int) -> None:  # type: ignore[type-arg]
    add_texts(client, collection, {"a": ("a", {})})
    response = client.post(f"/v1/collections/{collection}/search", json=body)
    assert response.status_code == status, response.text
    error_code(response)


def test_bad_file_queries(client: TestClient, collection: str) -> None:
    url = f"/v1/collections/{collection}/search"
    assert client.post(url, files={"file": ("x", b"nope")}).status_code == 415
    assert (
        client.post(url, files={"file": ("x", image_case("rgb_png"))}, data={"k": "x"}).status_code
        == 422
    )
    bad_filter = client.post(
        url, files={"file": ("x", image_case("rgb_png"))}, data={"filter": "{"}
    )
    assert bad_filter.status_code == 400
    assert client.post(url, files=[("k", (None, "3"))]).status_code == 422
    assert client.post(url, data={"k": "3"}).status_code == 415  # urlencoded: not a body we take


def test_unknown_collection(client: TestClient) -> None:
    response = client.post("/v1/collections/none/search", json={"text": "a"})
    assert response.status_code == 404


def test_embed_texts_and_files(client: TestClient) -> None:
    body = client.post("/v1/embed", json={"texts": ["a cat", "a dog"]}).json()
    assert body["dim"] == 64
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    files = [("file", ("a", image_case("rgb_png"))), ("file", ("b", image_case("l_png")))]
    images = client.post("/v1/embed", files=files).json()
    assert np.array(images["embeddings"]).shape == (2, 64)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"texts": []}}, 422),
        ({"json": {"texts": [""]}}, 422),
        ({"json": {"texts": ["x"] * 257}}, 422),
        ({"files": {"file": ("a", b"garbage")}}, 415),
        ({"files": [("x", (None, "1"))]}, 422),
        ({"data": {"x": "1"}}, 415),
    ],
)
def test_embed_errors(client: TestClient, kwargs: dict, status: int) -> None:  # type: ignore[type-arg]
    response = client.post("/v1/embed", **kwargs)
    assert response.status_code == status, response.text
    error_code(response)
