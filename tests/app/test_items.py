"""Items: add (text, image), replace, batch, list, get, patch, delete, content."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

import index.items as index_items
from app.services.embedding import Embedder
from models.errors import Overloaded
from tests.conftest import error_code
from tests.factories import audio_bytes, image_case, services_of


def items_url(name: str) -> str:
    return f"/v1/collections/{name}/items"


def sizes(client: TestClient, name: str) -> tuple[int, int]:
    """(SQL count, FAISS size) of a collection."""
    body = client.get(f"/v1/collections/{name}").json()
    return body["count"], body["index"]["size"]


def test_text_item(client: TestClient, collection: str) -> None:
    response = client.post(
        items_url(collection), json={"text": "a red kite", "metadata": {"tag": "sky"}}
    )
    assert response.status_code == 201
    item = response.json()
    assert item["modality"] == "text"
    assert item["collection"] == collection
    assert item["metadata"] == {"tag": "sky"}
    assert isinstance(item["id"], str) and item["id"]
    assert len(item["sha256"]) == 64
    assert item["text"] == "a red kite"
    assert client.get(f"{items_url(collection)}/{item['id']}").json() == item
    content = client.get(f"{items_url(collection)}/{item['id']}/content")
    assert content.content == b"a red kite"
    assert content.headers["content-type"].startswith("text/plain")
    assert sizes(client, collection) == (1, 1)


def test_image_item_multipart(client: TestClient, collection: str) -> None:
    data = image_case("rgb_jpeg")
    response = client.post(
        items_url(collection),
        files={"file": ("cat.jpg", data, "image/jpeg")},
        data={"id": "cat-1", "metadata": json.dumps({"album": "2024"})},
    )
    assert response.status_code == 201, response.text
    item = response.json()
    assert (item["id"], item["modality"], item["metadata"]) == ("cat-1", "image", {"album": "2024"})
    assert item["content_type"] == "image/jpeg"
    assert item["size_bytes"] == len(data)
    content = client.get(f"{items_url(collection)}/cat-1/content")
    assert content.content == data
    assert content.headers["content-type"] == "image/jpeg"


def test_same_client_id_replaces(client: TestClient, collection: str) -> None:
    first = client.post(items_url(collection), json={"text": "old words", "id": "doc"})
    assert first.status_code == 201
    second = client.post(
        items_url(collection), json={"text": "new words", "id": "doc", "metadata": {"v": 2}}
    )
    assert second.status_code == 200
    assert second.json()["created_at"] == first.json()["created_at"]
    assert client.get(f"{items_url(collection)}/doc").json()["text"] == "new words"
    assert sizes(client, collection) == (1, 1)
    hit = client.post(f"/v1/collections/{collection}/search", json={"text": "new words", "k": 1})
    assert hit.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 422, "validation_error"),
        ({"text": "   "}, 422, "validation_error"),
        ({"text": "x" * 20_001}, 422, "validation_error"),
        ({"text": "x", "id": "a/b"}, 422, "validation_error"),
        ({"text": "x", "id": ""}, 422, "validation_error"),
        ({"text": "x", "metadata": [1, 2]}, 422, "validation_error"),
        ({"text": "x", "metadata": {"big": "y" * 70_000}}, 422, "validation_error"),
        ({"texts": ["x"]}, 422, "validation_error"),
        ([1, 2], 422, "validation_error"),
    ],
)
def test_bad_json_items_change_nothing(
    client: TestClient, collection: str, body: object, status: int, code: str
) -> None:
    response = client.post(items_url(collection), json=body)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert sizes(client, collection) == (0, 0)


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"file": ("x.txt", b"just some words", "text/plain")}, {}, 415, "unsupported_media"),
        ({"file": ("x.png", b"", "image/png")}, {}, 415, "unsupported_media"),
        (
            {"file": ("x.png", image_case("rgb_png"), "image/png")},
            {"metadata": "{not json"},
            400,
            "malformed_json",
        ),
        (
            {"file": ("x.png", image_case("rgb_png"), "image/png")},
            {"metadata": "[1]"},
            422,
            "validation_error",
        ),
        (
            {"file": ("x.png", image_case("rgb_png"), "image/png")},
            {"id": "a/b"},
            422,
            "validation_error",
        ),
    ],
)
def test_bad_uploads_change_nothing(
    client: TestClient,
    collection: str,
    files: dict[str, tuple[str, bytes, str]],
    data: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = client.post(items_url(collection), files=files, data=data)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert sizes(client, collection) == (0, 0)


def test_audio_is_415_when_the_model_has_no_ears(client: TestClient, collection: str) -> None:
    wav = audio_bytes("WAV")
    response = client.post(items_url(collection), files={"file": ("a.wav", wav, "audio/wav")})
    assert response.status_code == 415
    message = response.json()["error"]["message"]
    assert "no audio model" in message and "MMR_AUDIO_MODEL" in message and "mmr-mini" in message
    assert sizes(client, collection) == (0, 0)


def test_two_files_on_the_single_route_is_422(client: TestClient, collection: str) -> None:
    png = image_case("rgb_png")
    response = client.post(
        items_url(collection), files=[("file", ("a.png", png)), ("file", ("b.png", png))]
    )
    assert response.status_code == 422


def test_other_body_types_are_415(client: TestClient, collection: str) -> None:
    response = client.post(
        items_url(collection), content=b"text=x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_unknown_collection_is_404(client: TestClient) -> None:
    response = client.post(items_url("nope"), json={"text": "x"})
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_batch_json_one_bad_item_does_not_sink_the_others(
    client: TestClient, collection: str
) -> None:
    response = client.post(
        f"{items_url(collection)}/batch",
        json={"items": [{"text": "one", "id": "1"}, {"text": ""}, {"text": "three"}]},
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 422, 201]
    assert results[0]["item"]["id"] == "1"
    assert results[1]["error"]["code"] == "validation_error"
    assert sizes(client, collection) == (2, 2)
    again = client.post(f"{items_url(collection)}/batch", json=[{"text": "uno", "id": "1"}])
    assert again.json()["results"][0]["status"] == 200


def test_batch_multipart_in_order(client: TestClient, collection: str) -> None:
    files = [
        ("file", ("a.png", image_case("rgb_png"), "image/png")),
        ("file", ("bad.png", b"garbage", "image/png")),
        ("file", ("c.gif", image_case("animated_gif"), "image/gif")),
    ]
    response = client.post(
        f"{items_url(collection)}/batch",
        files=files,
        data={"id": ["a", "b", "c"], "metadata": json.dumps({"src": "upload"})},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 415, 201]
    assert results[2]["item"]["id"] == "c"
    assert results[2]["item"]["metadata"] == {"src": "upload"}
    assert sizes(client, collection) == (2, 2)


def poison_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing an item whose metadata has ``poison`` fails (not as a fault of the database):
    the transaction it is in fails with it."""
    real = index_items._write_tags

    def failing(session: Any, collection_id: int, items: Any, existing: Any) -> None:
        if any(meta.get("poison") for _, meta in items):
            raise RuntimeError("the disk refused this item")
        real(session, collection_id, items, existing)

    monkeypatch.setattr(index_items, "_write_tags", failing)


def test_a_batch_that_fails_as_a_whole_writes_each_item_alone(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is one transaction; when it fails, each item is written alone, and only the
    item that fails then gets an error (500, in its place): the others are stored."""
    poison_writes(monkeypatch)
    batch = [
        {"id": "a", "text": "alpha"},
        {"id": "p", "text": "poison", "metadata": {"poison": True}},
        {"id": "c", "text": "gamma"},
    ]
    response = client.post(f"{items_url(collection)}/batch", json=batch)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 500, 201]
    assert results[1]["error"]["code"] == "internal_error"
    assert sizes(client, collection) == (2, 2)
    assert client.get(f"{items_url(collection)}/p").status_code == 404


def stored_files(client: TestClient) -> set[str]:
    """The digests of the originals in the blob store (the trash not counted)."""
    root = services_of(client).blobs.root
    return {p.name for p in root.rglob("*") if p.is_file() and ".trash" not in p.parts}


def test_a_file_of_a_batch_that_fails_alone_leaves_no_original(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Originals are written while the batch is encoded; one whose row is never committed is
    trashed once the batch is answered, the others stay."""
    poison_writes(monkeypatch)
    names = ["a", "p", "c"]
    files = [
        ("file", (f"{n}.png", image_case("rgb_png", seed=k), "image/png"))
        for k, n in enumerate(names)
    ]
    metadata = json.dumps([{"poison": n == "p"} for n in names])
    response = client.post(
        f"{items_url(collection)}/batch", files=files, data={"id": names, "metadata": metadata}
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 500, 201], response.text
    kept = {results[0]["item"]["sha256"], results[2]["item"]["sha256"]}
    assert stored_files(client) == kept


def test_a_failed_forward_leaves_no_original(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: Any, *_: Any) -> Any:
        raise Overloaded("the image encoder has too many inputs waiting")

    monkeypatch.setattr(Embedder, "encode_mixed", refused)
    files = {"file": ("a.png", image_case("rgb_png"), "image/png")}
    response = client.post(items_url(collection), files=files, data={"id": "a"})
    assert response.status_code in (429, 503), response.text
    assert stored_files(client) == set()


def test_a_batch_whose_originals_failed_writes_each_again_alone(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's originals failed to be written once (not a full disk): the text, which
    needs no file, is stored, and the image writes its own original again."""
    blobs = services_of(client).blobs
    real = blobs._put_all
    calls = [0]

    def once(datas: Any, digests: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(5, "Input/output error")
        real(datas, digests)

    monkeypatch.setattr(blobs, "_put_all", once)
    response = client.post(
        f"{items_url(collection)}/batch",
        files=[("file", ("a.png", image_case("rgb_png"), "image/png"))],
        data={"id": ["a"]},
    )
    assert [r["status"] for r in response.json()["results"]] == [201], response.text
    sha = response.json()["results"][0]["item"]["sha256"]
    assert stored_files(client) == {sha}
    assert client.get(f"{items_url(collection)}/a/content").content == image_case("rgb_png")


def test_a_batch_naming_an_id_twice_ends_with_its_last_entry(
    client: TestClient, collection: str
) -> None:
    batch = [{"id": "x", "text": "first words"}, {"id": "x", "text": "second words"}]
    response = client.post(f"{items_url(collection)}/batch", json=batch)
    assert [r["status"] for r in response.json()["results"]] == [201, 200]
    assert sizes(client, collection) == (1, 1)  # one row, one vector in the index
    assert client.get(f"{items_url(collection)}/x").json()["text"] == "second words"
    hits = client.post(
        f"/v1/collections/{collection}/search", json={"text": "second words", "k": 1}
    ).json()["results"]
    assert hits[0]["item"]["id"] == "x" and hits[0]["score"] > 0.999


def test_batch_limits(client: TestClient, collection: str) -> None:
    assert client.post(f"{items_url(collection)}/batch", json=[]).status_code == 422
    too_many = [{"text": str(i)} for i in range(257)]
    assert client.post(f"{items_url(collection)}/batch", json=too_many).status_code == 422
    files = [("file", ("a.png", image_case("rgb_png"), "image/png"))]
    mismatch = client.post(f"{items_url(collection)}/batch", files=files, data={"id": ["a", "b"]})
    assert mismatch.status_code == 422
    assert sizes(client, collection) == (0, 0)


def list_all(client: TestClient, name: str, *, limit: int) -> list[str]:
    """Every item id, page by page."""
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": limit}
    while True:
        page = client.get(items_url(name), params=params).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return seen
        params["cursor"] = page["next_cursor"]


def test_list_pages_oldest_first(client: TestClient, collection: str) -> None:
    for i in range(7):
        client.post(items_url(collection), json={"text": f"t{i}", "id": f"i{i}"})
    assert list_all(client, collection, limit=3) == [f"i{i}" for i in range(7)]


def test_list_is_stable_under_concurrent_writes(client: TestClient, collection: str) -> None:
    for i in range(20):
        client.post(items_url(collection), json={"text": f"t{i}", "id": f"old{i}"})

    def writer() -> None:
        for i in range(20):
            client.post(items_url(collection), json={"text": f"n{i}", "id": f"new{i}"})
            client.delete(f"{items_url(collection)}/new{i}")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = [i for i in list_all(client, collection, limit=2) if i.startswith("old")]
    thread.join()
    assert seen == [f"old{i}" for i in range(20)]


@pytest.mark.parametrize("params", [{"cursor": "garbage!"}, {"limit": 0}, {"limit": 1001}])
def test_list_bad_params(client: TestClient, collection: str, params: dict[str, object]) -> None:
    response = client.get(items_url(collection), params=params)
    assert response.status_code in (400, 422)
    error_code(response)


def test_patch_replaces_metadata_without_reembedding(client: TestClient, collection: str) -> None:
    client.post(items_url(collection), json={"text": "stay", "id": "p", "metadata": {"a": 1}})
    response = client.patch(f"{items_url(collection)}/p", json={"metadata": {"b": 2}})
    assert response.status_code == 200
    assert response.json()["metadata"] == {"b": 2}
    search = f"/v1/collections/{collection}/search"
    assert client.post(search, json={"text": "stay", "filter": {"a": 1}}).json()["results"] == []
    hits = client.post(search, json={"text": "stay", "filter": {"b": 2}}).json()["results"]
    assert hits[0]["item"]["id"] == "p"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert client.patch(f"{items_url(collection)}/zz", json={"metadata": {}}).status_code == 404
    bad = client.patch(f"{items_url(collection)}/p", json={"metadata": "x"})
    assert bad.status_code == 422


def test_delete_is_final(client: TestClient, collection: str) -> None:
    client.post(items_url(collection), json={"text": "bye", "id": "d"})
    client.post(items_url(collection), json={"text": "stay", "id": "s"})
    assert client.delete(f"{items_url(collection)}/d").status_code == 204
    assert client.get(f"{items_url(collection)}/d").status_code == 404
    assert client.get(f"{items_url(collection)}/d/content").status_code == 404
    assert client.delete(f"{items_url(collection)}/d").status_code == 404
    hits = client.post(f"/v1/collections/{collection}/search", json={"text": "bye", "k": 10})
    assert [h["item"]["id"] for h in hits.json()["results"]] == ["s"]
    assert sizes(client, collection) == (1, 1)


def blob_files(client: TestClient) -> set[str]:
    root = client.app.state.services.blobs.root  # type: ignore[attr-defined]
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_original_bytes_go_when_no_item_needs_them(client: TestClient, collection: str) -> None:
    client.post("/v1/collections", json={"name": "other"})
    png = image_case("rgb_png")
    a = client.post(items_url(collection), files={"file": ("a", png)}, data={"id": "a"}).json()
    client.post(items_url("other"), files={"file": ("b", png)}, data={"id": "b"})
    client.post(items_url(collection), json={"text": "first", "id": "t"})
    first = client.get(f"{items_url(collection)}/t").json()["sha256"]
    client.post(items_url(collection), json={"text": "second", "id": "t"})
    assert first not in blob_files(client)  # replaced content is gone

    client.delete(f"{items_url(collection)}/a")
    assert a["sha256"] in blob_files(client)  # still used by the other collection
    assert client.get(f"{items_url('other')}/b/content").content == png
    client.delete("/v1/collections/other")
    assert a["sha256"] not in blob_files(client)
    assert client.get(f"{items_url(collection)}/t/content").content == b"second"


def test_nul_characters_are_refused_or_kept_alike_on_every_database(
    client: TestClient, collection: str
) -> None:
    response = client.post(items_url(collection), json={"text": "a\x00b"})
    assert response.status_code == 422
    assert client.get(f"{items_url(collection)}/a%00b").status_code == 404
    assert client.get("/v1/collections/x%00y").status_code == 404
    metadata = {"k\x00ey": "v", "key": "va\x00lue"}
    added = client.post(items_url(collection), json={"text": "nul", "metadata": metadata})
    assert added.status_code == 201, added.text
    assert added.json()["metadata"] == metadata
    search = f"/v1/collections/{collection}/search"
    hits = client.post(search, json={"text": "nul", "filter": {"key": "va\x00lue"}}).json()
    assert len(hits["results"]) == 1
    none = client.post(search, json={"text": "nul", "filter": {"k\x00ey": "v"}}).json()
    assert none["results"] == []
