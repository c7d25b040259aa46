"""Collections: create, list, get, delete, names, spaces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.encoders.architectures import register_project_configs
from tests.conftest import TEST_MODEL, error_code


def test_create_returns_the_space(client: TestClient) -> None:
    response = client.post("/v1/collections", json={"name": "photos"})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "photos"
    assert body["model"] == TEST_MODEL
    assert body["dim"] == 64
    assert body["count"] == 0
    assert body["index"]["type"] == "flat" and body["index"]["size"] == 0
    assert body["index"]["params"] == {} and body["index"]["trained"]
    assert body["created_at"].endswith("Z")


def test_name_taken_is_409(client: TestClient, collection: str) -> None:
    response = client.post("/v1/collections", json={"name": collection})
    assert response.status_code == 409
    assert error_code(response) == "conflict"


@pytest.mark.parametrize("name", ["", "Photos", "-x", "a" * 64, "a b", "a/b", "ü"])
def test_bad_names_are_422_and_create_nothing(client: TestClient, name: str) -> None:
    response = client.post("/v1/collections", json={"name": name})
    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert client.get("/v1/collections").json() == {"collections": []}


def test_unknown_index_type_is_422(client: TestClient) -> None:
    response = client.post("/v1/collections", json={"name": "x", "index": {"type": "magic"}})
    assert response.status_code == 422


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/collections", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_code(response) == "malformed_json"


def test_list_get_delete(client: TestClient) -> None:
    for name in ("b", "a"):
        client.post("/v1/collections", json={"name": name})
    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert names == ["b", "a"]
    assert client.get("/v1/collections/a").json()["name"] == "a"
    client.post("/v1/collections/a/items", json={"text": "gone soon"})
    assert client.delete("/v1/collections/a").status_code == 204
    missing = client.get("/v1/collections/a")
    assert missing.status_code == 404
    assert error_code(missing) == "not_found"
    assert client.delete("/v1/collections/a").status_code == 404
    # The name can be used again, and the new collection starts empty.
    assert client.post("/v1/collections", json={"name": "a"}).json()["count"] == 0
    hits = client.post("/v1/collections/a/search", json={"text": "gone soon"}).json()
    assert hits["results"] == []


def test_unknown_route_and_method_use_the_error_body(client: TestClient) -> None:
    assert error_code(client.get("/v1/nothing")) == "not_found"
    response = client.put("/v1/collections")
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


def test_a_collection_of_another_model_is_served_with_its_own_model(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with TestClient(create_app(make_settings())) as c:
        c.post("/v1/collections", json={"name": "tiny"})
        c.post("/v1/collections/tiny/items", json={"text": "kept", "id": "k"})
    with TestClient(create_app(make_settings(model="random:RN50"))) as c:
        # Creating one with another model needs it allowed; the stored one needs nothing.
        refused = c.post("/v1/collections", json={"name": "small", "model": TEST_MODEL})
        assert refused.status_code == 403 and "MMR_ALLOWED_MODELS" in refused.text
    with TestClient(create_app(make_settings(model="random:RN50", allowed_models=TEST_MODEL))) as c:
        info = c.get("/v1/collections/tiny").json()
        assert info["compatible"] is True and (info["model"], info["dim"]) == (TEST_MODEL, 64)
        assert c.post("/v1/collections/tiny/items", json={"text": "new"}).status_code == 201
        hits = c.post("/v1/collections/tiny/search", json={"text": "kept", "k": 2})
        assert hits.status_code == 200 and len(hits.json()["results"]) == 2
        assert c.post("/v1/collections/tiny/search", json={"vector": [0.1] * 64}).is_success
        embedded = c.post("/v1/embed", json={"texts": ["kept"], "collection": "tiny"}).json()
        assert (embedded["model"], embedded["dim"]) == (TEST_MODEL, 64)
        assert c.post("/v1/embed", json={"texts": ["kept"]}).json()["dim"] == 1024
        response = c.post("/v1/collections/tiny/search", json={"vector": [0.1] * 1024})
        assert error_code(response) == "embedding_space_mismatch"
        hits = c.post("/v1/collections/tiny/search", json={"item_id": "k"}).json()["results"]
        assert hits[0]["item"]["id"] == "k"
        # A new collection gets the server's model, or the one it names.
        assert c.post("/v1/collections", json={"name": "big"}).json()["dim"] == 1024
        named = c.post("/v1/collections", json={"name": "small", "model": TEST_MODEL})
        assert (named.status_code, named.json()["dim"]) == (201, 64)
        loaded = {m["id"]: m for m in c.get("/v1/models").json()["loaded"]}
        assert loaded["random:RN50"]["default"] and not loaded[TEST_MODEL]["default"]
        assert loaded[TEST_MODEL]["memory_mb"] > 0


def test_a_collection_whose_model_cannot_be_loaded_is_refused_with_409(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    register_project_configs()
    checkpoint = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model("mmr-tiny").state_dict(), checkpoint)
    model = f"open_clip:mmr-tiny@{checkpoint}"
    allowed = f"{model},random:no-such-arch"
    with TestClient(create_app(make_settings(allowed_models=allowed))) as c:
        assert c.post("/v1/collections", json={"name": "ck", "model": model}).status_code == 201
        c.post("/v1/collections/ck/items", json={"text": "kept", "id": "k"})
        missing = c.post("/v1/collections", json={"name": "no", "model": "random:no-such-arch"})
        assert error_code(missing) == "embedding_space_mismatch"
        assert "unknown architecture" in missing.json()["error"]["message"]
        assert c.get("/v1/collections/no").status_code == 404
    checkpoint.unlink()
    with TestClient(create_app(make_settings())) as c:
        response = c.post("/v1/collections/ck/search", json={"text": "kept"})
        assert error_code(response) == "embedding_space_mismatch"
        assert "cannot be loaded here" in response.json()["error"]["message"]
        assert c.get("/v1/collections/ck").json()["compatible"] is False
        # What needs no model still works: the stored vectors, the items.
        hits = c.post("/v1/collections/ck/search", json={"item_id": "k"}).json()["results"]
        assert hits[0]["item"]["id"] == "k"
