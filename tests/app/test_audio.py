"""Audio through the API with a model that has ears (mmr-mini): every route that takes a file."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.main import create_app
from app.settings import Settings
from index.db import downgrade, make_engine
from tests.conftest import error_code
from tests.factories import (
    AUDIO_FORMATS,
    audio_bytes,
    image_bytes,
    truncated,
    wav_with_lying_header,
)

MIME = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """A server on mmr-mini with a short audio limit."""
    return make_settings(model="mmr-mini", max_audio_seconds=5)


def url(name: str, tail: str = "items") -> str:
    return f"/v1/collections/{name}/{tail}"


def count(client: TestClient, name: str) -> int:
    body = client.get(url(name), params={"limit": 1000}).json()
    return len(body["items"])


def test_models_lists_audio(client: TestClient) -> None:
    active = client.get("/v1/models").json()["active"]
    assert active["id"] == "mmr-mini"
    assert active["modalities"] == ["image", "text", "audio"]


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_audio_items_in_every_format(client: TestClient, collection: str, fmt: str) -> None:
    data = audio_bytes(fmt, seconds=1.5, rate=22050 if fmt != "MP3" else 16000, channels=2)
    response = client.post(url(collection), files={"file": ("clip", data)}, data={"id": "c"})
    assert response.status_code == 201, response.text
    item = response.json()
    assert (item["modality"], item["content_type"]) == ("audio", MIME[fmt])
    content = client.get(url(collection, "items/c/content"))
    assert content.content == data and content.headers["content-type"] == MIME[fmt]


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (96000, 1), (44100, 8), (16000, 2)])
def test_rates_and_channel_counts(
    client: TestClient, collection: str, rate: int, channels: int
) -> None:
    data = audio_bytes("FLAC", seconds=1.0, rate=rate, channels=channels)
    response = client.post(url(collection), files={"file": ("clip.flac", data)})
    assert response.status_code == 201, response.text


def test_silence_is_an_item(client: TestClient, collection: str) -> None:
    data = audio_bytes("WAV", silent=True)
    assert client.post(url(collection), files={"file": ("s.wav", data)}).status_code == 201


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (audio_bytes("WAV", seconds=6.0, rate=8000), 413, "media_too_large"),
        (audio_bytes("WAV", seconds=0.0), 415, "unsupported_media"),
        (truncated(audio_bytes("FLAC", seconds=2.0)), 415, "unsupported_media"),
        (truncated(audio_bytes("OGG", seconds=2.0)), 415, "unsupported_media"),
        (wav_with_lying_header(4.0), 415, "unsupported_media"),
        (audio_bytes("WAV")[:40], 415, "unsupported_media"),
    ],
    ids=["too-long", "zero-length", "truncated-flac", "truncated-ogg", "lying-header", "head"],
)
def test_bad_audio_changes_nothing(
    client: TestClient, collection: str, data: bytes, status: int, code: str
) -> None:
    response = client.post(url(collection), files={"file": ("clip", data)})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert count(client, collection) == 0
    search = client.post(url(collection, "search"), files={"file": ("q", data)})
    assert search.status_code == status


def test_audio_query_and_mixed_batch(client: TestClient, collection: str) -> None:
    files = [
        ("file", ("a.wav", audio_bytes("WAV", freq=300.0))),
        ("file", ("b.png", image_bytes("RGB"))),
        ("file", ("c.mp3", truncated(audio_bytes("MP3")))),
        ("file", ("d.ogg", audio_bytes("OGG", freq=2000.0))),
    ]
    batch = client.post(url(collection, "items/batch"), files=files).json()["results"]
    assert [r["status"] for r in batch] == [201, 201, 415, 201]
    assert [r["item"]["modality"] for r in batch if r["status"] == 201] == [
        "audio",
        "image",
        "audio",
    ]
    query = client.post(
        url(collection, "search"),
        files={"file": ("q.flac", audio_bytes("FLAC", freq=300.0))},
        data={"k": "3", "modalities": "audio"},
    )
    assert query.status_code == 200, query.text
    body = query.json()
    assert body["query_modality"] == "audio"
    assert {r["item"]["modality"] for r in body["results"]} == {"audio"}


def test_embed_takes_audio_and_images_in_order(client: TestClient) -> None:
    files = [
        ("file", ("a.wav", audio_bytes("WAV"))),
        ("file", ("b.png", image_bytes("RGB"))),
    ]
    body = client.post("/v1/embed", files=files).json()
    assert len(body["embeddings"]) == 2 and body["dim"] == 128
    text = client.post("/v1/embed", json={"texts": ["a tone"]}).json()["embeddings"][0]
    assert len(text) == 128


def test_a_model_without_ears_says_why(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(model="random:mmr-tiny"))) as client:
        assert client.get("/v1/models").json()["active"]["modalities"] == ["image", "text"]
        client.post("/v1/collections", json={"name": "deaf"})
        response = client.post(url("deaf"), files={"file": ("a.mp3", audio_bytes("MP3"))})
        assert response.status_code == 415
        message = response.json()["error"]["message"]
        assert "no audio model" in message and "MMR_AUDIO_MODEL=clap:" in message


def test_a_collection_from_before_aligner_versions_keeps_working(
    make_settings: Callable[..., Settings],
) -> None:
    """Data left by the previous release: schema 0002, no aligners table, aligner version 0,
    a snapshot whose FAISS ids are bare item keys. The upgrade keeps every item searchable."""
    settings = make_settings(model="mmr-mini")
    clip = audio_bytes("WAV", seconds=1.0, freq=880.0)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/collections", json={"name": "old"})
        assert client.post(url("old"), files={"file": ("a", clip)}, data={"id": "a"}).is_success
        assert client.post(url("old"), json={"text": "a high tone", "id": "t"}).is_success
    engine = make_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE collections SET aligner_version = 0"))
        conn.execute(text("UPDATE items SET aligner_version = 0"))
    downgrade(engine, "0002")
    engine.dispose()
    snapshot = next((settings.data_dir / "indexes").glob("*.faiss"))
    old = snapshot.read_bytes().replace(b"MMR-INDEX-SNAPSHOT 2\n", b"MMR-INDEX-SNAPSHOT 1\n", 1)
    snapshot.write_bytes(old)
    with TestClient(create_app(settings)) as client:
        old_row = client.get("/v1/collections/old").json()
        assert (old_row["aligner_version"], old_row["audio_model"]) == (0, "mmr-mini")
        hits = client.post(
            url("old", "search"), files={"file": ("q", clip)}, data={"modalities": "audio"}
        ).json()["results"]
        assert hits[0]["item"]["id"] == "a" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert client.post(url("old"), files={"file": ("b", clip)}, data={"id": "b"}).is_success
        assert client.get("/v1/collections/old/aligners").json() == {"active": 0, "aligners": []}
