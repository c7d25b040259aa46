"""Audio for a model without ears: a tiny random CLAP bridged into a random open_clip space.

The weights are random, so these tests pin plumbing, not meaning: the real ``clap:`` loading
path, the bootstrapped head recorded as the collection's first aligner version, segments of
long recordings with their times, every cross-modal route, and strictness about spaces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.aligners import record
from app.settings import Settings
from app.state import Services
from index.columns import from_blob, from_features
from models.encoders.aligner import Aligner, AlignerHead
from models.encoders.clap import build_tiny_clap
from models.errors import ModelLoadError
from tests.conftest import error_code
from tests.factories import image_bytes, samples_bytes

RATE = 16000
NAME = "sounds"


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLAP at 16 kHz with 10 s windows, saved like a downloaded one."""
    return build_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny", seed=0, sample_rate=RATE)


@pytest.fixture(scope="module")
def head_file(clap_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bootstrap head for the pair, built once through the real command."""
    from app.cli import main

    out = tmp_path_factory.mktemp("heads") / "bridge.safetensors"
    argv = ["bootstrap-audio", "--model", "random:mmr-tiny", "--audio-model", f"clap:{clap_dir}"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture
def bridged(
    make_settings: Callable[..., Settings], clap_dir: Path, head_file: Path
) -> Callable[..., Settings]:
    """Settings of a random open_clip + tiny CLAP server (overrides allowed)."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {"audio_model": f"clap:{clap_dir}", "audio_head": head_file}
        return make_settings(**(values | overrides))

    return build


@pytest.fixture
def client(bridged: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(bridged())) as c:
        yield c


def noise(seconds: float, seed: int, amplitude: float = 0.05) -> np.ndarray:
    return (
        np.random.default_rng(seed).normal(0, amplitude, round(seconds * RATE)).astype(np.float32)
    )


def chirp(seconds: float = 1.5, f0: float = 400.0, f1: float = 3000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.6 * np.sin(phase) * np.hanning(len(t))).astype(np.float32)


def chirp_in_noise(total: float = 60.0, at: float = 37.0, seed: int = 1) -> np.ndarray:
    """A long noise recording with one chirp starting ``at`` seconds in."""
    wave = noise(total, seed)
    burst = chirp()
    start = round(at * RATE)
    wave[start : start + len(burst)] += burst
    return wave


def wav(wave: np.ndarray) -> bytes:
    # FLOAT: the server decodes exactly these samples, so a cut-out segment matches exactly.
    return samples_bytes(wave[:, None], RATE, "WAV", subtype="FLOAT")


def post_file(client: TestClient, data: bytes, item_id: str, **meta: object) -> dict:  # type: ignore[type-arg]
    response = client.post(
        f"/v1/collections/{NAME}/items",
        files={"file": (item_id, data)},
        data={"id": item_id, "metadata": json.dumps(meta)},
    )
    assert response.status_code == 201, response.text
    body: dict = response.json()  # type: ignore[type-arg]
    return body


def search(client: TestClient, **kwargs: object) -> list[dict]:  # type: ignore[type-arg]
    data = kwargs.pop("data", None)
    if data is not None:
        form = {k: str(v) for k, v in kwargs.items()}
        response = client.post(
            f"/v1/collections/{NAME}/search", files={"file": ("q", data)}, data=form
        )
    else:
        response = client.post(f"/v1/collections/{NAME}/search", json=kwargs)
    assert response.status_code == 200, response.text
    results: list[dict] = response.json()["results"]  # type: ignore[type-arg]
    return results


def fill(client: TestClient) -> np.ndarray:
    """Images, texts, short clips and one long recording; returns the long wave."""
    assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
    for i in range(3):
        post_file(client, image_bytes("RGB", fmt="PNG", seed=i), f"img{i}")
        item = {"text": f"caption number {i}", "id": f"txt{i}"}
        assert client.post(f"/v1/collections/{NAME}/items", json=item).status_code == 201
        post_file(client, wav(noise(2.0 + i, seed=10 + i, amplitude=0.1 + 0.2 * i)), f"clip{i}")
    long = chirp_in_noise()
    item = post_file(client, wav(long), "long")
    assert item["modality"] == "audio" and item["segments"] == 11 and item["duration"] == 60.0
    return long


def test_models_reports_the_bridge(client: TestClient, clap_dir: Path) -> None:
    active = client.get("/v1/models").json()["active"]
    assert active["modalities"] == ["image", "text", "audio"]
    audio = active["audio"]
    assert audio["id"] == f"clap:{clap_dir}"
    assert (audio["sample_rate"], audio["window_s"], audio["hop_s"]) == (RATE, 10.0, 5.0)
    assert audio["head"]["kind"] == "linear" and audio["head"]["in_dim"] == audio["raw_dim"]
    assert audio["head"]["out_dim"] == active["dim"]


def test_every_route_across_modalities(client: TestClient, clap_dir: Path) -> None:
    long = fill(client)
    collection = client.get(f"/v1/collections/{NAME}").json()
    assert collection["audio_model"] == f"clap:{clap_dir}" and collection["aligner_version"] == 1
    aligners = client.get(f"/v1/collections/{NAME}/aligners").json()
    assert aligners["active"] == 1
    (first,) = aligners["aligners"]
    assert first["active"] and first["heads"]["audio"]["encoder"] == f"clap:{clap_dir}"
    assert first["heads"]["image"]["kind"] == "identity"
    assert first["meta"]["kind"] == "bootstrap"
    # Even between two random text towers the bootstrap head beats chance on held-out captions.
    report = first["meta"]["bootstrap"]
    assert report["pairs"] == 3000 and report["heldout"] == 300
    assert report["after"]["source_to_target@10"] > 1.5 * report["before"]["source_to_target@10"]

    # text -> audio: only recordings, each once, with the times of its best segment.
    found = search(client, text="a chirp in the noise", k=10, modalities=["audio"])
    assert sorted(h["item"]["id"] for h in found) == ["clip0", "clip1", "clip2", "long"]
    for hit in found:
        assert hit["start"] is not None and hit["end"] > hit["start"]
    # audio -> image and audio -> text: answers from the other modalities.
    query = wav(noise(3.0, seed=99))
    images = search(client, data=query, k=3, modalities="image")
    assert sorted(h["item"]["id"] for h in images) == ["img0", "img1", "img2"]
    assert all(h["start"] is None for h in images)
    texts = search(client, data=query, k=3, modalities="text")
    assert {h["item"]["id"] for h in texts} == {"txt0", "txt1", "txt2"}
    # audio -> audio: a stored clip finds itself first, at a score of one.
    same = search(client, data=wav(noise(3.0, seed=11, amplitude=0.3)), k=2, modalities="audio")
    assert same[0]["item"]["id"] == "clip1" and same[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # The ten seconds around the chirp, cut out of the long file: that segment, that time.
    moment = search(client, data=wav(long[30 * RATE : 40 * RATE]), k=1, modalities="audio")
    assert moment[0]["item"]["id"] == "long"
    assert (moment[0]["start"], moment[0]["end"]) == (30.0, 40.0)
    assert moment[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # More like this: a stored recording stands for itself as the mean of its segments.
    like = search(client, item_id="long", k=1)
    assert like[0]["item"]["id"] == "long" and like[0]["score"] > 0.9


def test_embed_uses_a_collections_heads(client: TestClient) -> None:
    fill(client)
    clip = wav(noise(2.0, seed=10, amplitude=0.1))
    plain = client.post("/v1/embed", files={"file": ("a", clip)}).json()
    scoped = client.post("/v1/embed", files={"file": ("a", clip)}, data={"collection": NAME})
    assert scoped.status_code == 200, scoped.text
    assert plain["aligner_version"] is None and scoped.json()["aligner_version"] == 1
    np.testing.assert_allclose(plain["embeddings"], scoped.json()["embeddings"], atol=1e-5)
    bad = client.post("/v1/embed", json={"texts": ["x"], "collection": "Not A Name"})
    assert bad.status_code == 422
    missing = client.post("/v1/embed", json={"texts": ["x"], "collection": "absent"})
    assert missing.status_code == 404


def test_items_and_queries_meet_the_same_head_version(client: TestClient) -> None:
    fill(client)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(NAME)
    live = services.indexes.get(row)
    stored = services.stores.items.get(collection_id=row.id, external_id="long")
    assert stored.aligner_version == live.aligner.version == 1
    vectors = from_blob(stored.vector, row.dim)
    np.testing.assert_allclose(
        vectors,
        live.aligner.project("audio", from_features(stored.feature, len(vectors))),
        atol=1e-6,
    )
    # Activating another version (a new audio head): stored items are re-projected from their
    # raw features, and items and queries from then on go through the new heads.
    rng = np.random.default_rng(5)
    head = AlignerHead.linear(rng.normal(size=(row.dim, 32)))
    tuned = live.aligner.with_head("audio", head, live.aligner.encoders["audio"])
    assert record(aligners=services.stores.aligners, row=row, aligner=tuned) == 2
    swapped = client.post(f"/v1/collections/{NAME}/aligners/2/activate")
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["active"] == 2
    clip_wave = noise(2.5, seed=42, amplitude=0.2)
    post_file(client, wav(clip_wave), "after")
    after = services.stores.items.get(collection_id=row.id, external_id="after")
    assert after.aligner_version == 2
    response = client.post(
        f"/v1/collections/{NAME}/search",
        files={"file": ("q", wav(noise(3.0, seed=11, amplitude=0.3)))},
        data={"k": "1", "modalities": "audio"},
    ).json()
    assert response["aligner_version"] == 2
    assert response["results"][0]["item"]["id"] == "clip1"  # written under v1, re-projected
    assert response["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert services.embedder.audio is not None
    (seg,) = services.embedder.audio.encode_audio([clip_wave])
    embedded = client.post(
        "/v1/embed", files={"file": ("a", wav(clip_wave))}, data={"collection": NAME}
    ).json()
    assert embedded["aligner_version"] == 2
    np.testing.assert_allclose(
        embedded["embeddings"][0], tuned.project("audio", seg.features)[0], atol=1e-5
    )
    # Roll back: version 1 serves again, the item written under v2 included.
    assert client.post(f"/v1/collections/{NAME}/aligners/1/activate").status_code == 200
    hits = search(client, data=wav(clip_wave), k=1, modalities="audio")
    assert hits[0]["item"]["id"] == "after" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    missing = client.post(f"/v1/collections/{NAME}/aligners/9/activate")
    assert missing.status_code == 404


def test_without_an_audio_model_audio_is_refused_with_the_way_to_enable_it(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings())) as c:
        assert c.post("/v1/collections", json={"name": NAME}).status_code == 201
        response = c.post(f"/v1/collections/{NAME}/items", files={"file": ("a", wav(chirp()))})
        assert response.status_code == 415 and error_code(response) == "unsupported_media"
        assert "MMR_AUDIO_MODEL=clap:" in response.json()["error"]["message"]
        assert c.get("/v1/models").json()["active"]["audio"] is None


def test_spaces_stay_apart_and_each_is_served_with_its_own_towers(
    bridged: Callable[..., Settings], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    plain = make_settings()
    with TestClient(create_app(plain)) as c:
        assert c.post("/v1/collections", json={"name": "earless"}).status_code == 201
    with TestClient(create_app(bridged())) as c:
        assert c.post("/v1/collections", json={"name": NAME}).status_code == 201
        post_file(c, wav(noise(2.0, seed=3)), "kept")
        late = c.post("/v1/collections/earless/items", files={"file": ("a", wav(chirp()))})
        assert late.status_code == 415 and "no audio model" in late.text
        assert c.post("/v1/collections/earless/items", json={"text": "fine"}).status_code == 201
    other = build_tiny_clap(tmp_path / "other-clap", seed=1, sample_rate=RATE)
    with TestClient(create_app(bridged(audio_model=f"clap:{other}", audio_head=None))) as c:
        # The collection records its CLAP: this server loads it for the collection (its own
        # runs for new collections), so the recording is found by itself.
        found = c.post(
            f"/v1/collections/{NAME}/search", files={"file": ("q", wav(noise(2.0, seed=3)))}
        )
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["item"]["id"] == "kept"
        assert c.post(f"/v1/collections/{NAME}/search", json={"text": "x"}).status_code == 200
        audio = {m["audio_model"] for m in c.get("/v1/models").json()["loaded"]}
        assert audio == {f"clap:{other}", bridged().audio_model}


def test_audio_ids_and_heads_are_strict(
    bridged: Callable[..., Settings], tmp_path: Path, clap_dir: Path
) -> None:
    with (
        pytest.raises(ModelLoadError, match="no-such-dir"),
        TestClient(create_app(bridged(audio_model=f"clap:{tmp_path / 'no-such-dir'}"))),
    ):
        pass
    wrong = Aligner.identity(64, {"image": "random:other", "text": "random:other"})
    wrong.save(tmp_path / "wrong.safetensors")
    with (
        pytest.raises(ModelLoadError, match="bootstrap-audio"),
        TestClient(create_app(bridged(audio_head=tmp_path / "wrong.safetensors"))),
    ):
        pass
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with (
        pytest.raises(ModelLoadError, match="cannot read"),
        TestClient(create_app(bridged(audio_head=tmp_path / "junk.safetensors"))),
    ):
        pass


def test_a_missing_head_is_bootstrapped_once_and_cached(
    bridged: Callable[..., Settings],
) -> None:
    settings = bridged(audio_head=None)
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/models").json()["active"]["audio"]["head"]["kind"] == "linear"
    cached = list((settings.data_dir / "aligners").glob("*.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    started = time.monotonic()
    with TestClient(create_app(settings)):
        pass
    assert cached[0].stat().st_mtime_ns == stamp  # read back, not trained again
    assert time.monotonic() - started < 30
