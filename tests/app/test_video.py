"""Video items through the API (mmr-mini: frames and sound): uploads in every container, the
moment a hit carries, a video as the query, thumbnails at a moment, Range, and bad files."""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.services import thumbnails
from app.settings import Settings
from models.media import video as video_module
from models.media.video import frame_at
from models.synth.world.videos import CONTAINERS, VIDEO_CONTENT_TYPES, audio_only, encode_video
from tests.app.test_crash import Server, log_tail, serve, server_env
from tests.app.test_replicas import waited_for
from tests.conftest import error_code
from tests.factories import audio_bytes, image_bytes

FPS = 10
RATE = 16_000
RED, BLUE = (220, 30, 30), (30, 30, 220)
SIZE = (96, 64)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """mmr-mini (it has ears), with a short video limit."""
    return make_settings(model="mmr-mini", max_video_seconds=8, video_frame_interval_s=10)


def url(name: str, tail: str = "items") -> str:
    return f"/v1/collections/{name}/{tail}"


def picture(colour: tuple[int, int, int], shape: bool) -> np.ndarray:
    frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    frame[:] = (235, 235, 235)
    if shape:
        frame[16:48, 32:64] = colour
    return frame


@functools.cache
def red_then_blue(container: str = "mp4") -> bytes:
    """A red square for 0-2 s, then a blue one for 2-4 s, a low hum throughout."""
    frames = [picture(RED, True)] * (2 * FPS) + [picture(BLUE, True)] * (2 * FPS)
    t = np.arange(4 * RATE) / RATE
    wave = (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return encode_video(frames, fps=FPS, wave=wave, container=container)


def upload(client: TestClient, name: str, data: bytes, item_id: str) -> dict:
    response = client.post(url(name), files={"file": ("v", data)}, data={"id": item_id})
    assert response.status_code == 201, response.text
    return response.json()


def count(client: TestClient, name: str) -> int:
    return len(client.get(url(name), params={"limit": 1000}).json()["items"])


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(picture(colour, True)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_a_video_in_every_container_is_an_item_with_duration_and_segments(
    client: TestClient, collection: str, container: str
) -> None:
    data = red_then_blue(container)
    item = upload(client, collection, data, "v")
    assert item["modality"] == "video"
    assert item["content_type"] == VIDEO_CONTENT_TYPES[container]
    assert item["duration"] == pytest.approx(4.0, abs=0.1)
    # Two scenes (two frames), and the audio path's segments of 4 s of sound.
    assert item["segments"] >= 3
    content = client.get(url(collection, "items/v/content"))
    assert content.content == data
    assert content.headers["content-type"] == VIDEO_CONTENT_TYPES[container]
    part = client.get(url(collection, "items/v/content"), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]


def test_a_hit_carries_the_moment_that_matched(client: TestClient, collection: str) -> None:
    upload(client, collection, red_then_blue(), "v")
    upload(client, collection, image_bytes("RGB"), "other")
    for colour, span in ((RED, (0.0, 2.0)), (BLUE, (2.0, 4.0))):
        response = client.post(
            url(collection, "search"), files={"file": ("q.png", png(colour))}, data={"k": "2"}
        )
        assert response.status_code == 200, response.text
        best = response.json()["results"][0]
        assert best["item"]["id"] == "v"
        assert (best["start"], best["end"]) == pytest.approx(span, abs=0.11)


def test_the_modality_filter_and_a_text_query(client: TestClient, collection: str) -> None:
    upload(client, collection, red_then_blue(), "v")
    upload(client, collection, image_bytes("RGB"), "i")
    upload(client, collection, audio_bytes("WAV"), "a")
    body = client.post(
        url(collection, "search"), json={"text": "a red square", "k": 5, "modalities": ["video"]}
    ).json()
    assert [r["item"]["id"] for r in body["results"]] == ["v"]
    assert body["results"][0]["start"] is not None
    others = client.post(
        url(collection, "search"),
        json={"text": "a red square", "k": 5, "modalities": ["image", "audio"]},
    ).json()
    assert {r["item"]["id"] for r in others["results"]} == {"i", "a"}


def test_a_video_is_a_query_more_like_this_clip(client: TestClient, collection: str) -> None:
    upload(client, collection, red_then_blue(), "v")
    still = encode_video([picture(RED, False)] * FPS, fps=FPS)
    upload(client, collection, still, "plain")
    upload(client, collection, image_bytes("RGB"), "i")
    by_file = client.post(
        url(collection, "search"), files={"file": ("q.webm", red_then_blue("webm"))}
    ).json()
    assert by_file["query_modality"] == "video"
    assert by_file["results"][0]["item"]["id"] == "v"
    by_item = client.post(url(collection, "search"), json={"item_id": "v", "k": 3}).json()
    # The mean of its segments stands for the video; its best segment answers.
    assert by_item["results"][0]["item"]["id"] == "v"
    assert by_item["results"][0]["score"] > by_item["results"][1]["score"]


def test_embed_takes_a_video(client: TestClient) -> None:
    body = client.post("/v1/embed", files=[("file", ("v.mp4", red_then_blue()))]).json()
    assert len(body["embeddings"]) == 1 and len(body["embeddings"][0]) == body["dim"]


def thumb_colour(response: object) -> np.ndarray:
    image = Image.open(io.BytesIO(response.content)).convert("RGB")  # type: ignore[attr-defined]
    w, h = image.size
    return np.asarray(image)[h // 2, w // 2].astype(int)


def test_thumbnail_at_a_moment(client: TestClient, collection: str) -> None:
    upload(client, collection, red_then_blue(), "v")
    first = client.get(url(collection, "items/v/thumbnail"))
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert np.abs(thumb_colour(first) - RED).max() < 40
    later = client.get(url(collection, "items/v/thumbnail"), params={"t": 3.0})
    assert np.abs(thumb_colour(later) - BLUE).max() < 40
    assert later.headers["etag"] != first.headers["etag"]
    again = client.get(
        url(collection, "items/v/thumbnail"),
        params={"t": 3.0},
        headers={"If-None-Match": later.headers["etag"]},
    )
    assert again.status_code == 304
    past = client.get(url(collection, "items/v/thumbnail"), params={"t": 60})
    assert past.status_code == 422 and error_code(past) == "validation_error"
    negative = client.get(url(collection, "items/v/thumbnail"), params={"t": -1})
    assert negative.status_code == 422
    upload(client, collection, audio_bytes("WAV"), "a")
    assert client.get(url(collection, "items/a/thumbnail")).status_code == 404
    upload(client, collection, image_bytes("RGB"), "i")
    assert client.get(url(collection, "items/i/thumbnail"), params={"t": 1}).status_code == 422


def test_a_thousand_moments_of_a_video_decode_at_most_once_a_segment(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = upload(client, collection, red_then_blue("mkv"), "v")
    monkeypatch.setattr(thumbnails, "_cache", thumbnails.ThumbnailCache())
    decodes: list[float] = []

    def counted(data: bytes, t: float, **kw: object) -> Image.Image:
        decodes.append(t)
        return frame_at(data, t, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(thumbnails, "frame_at", counted)
    for t in np.linspace(0, 3.999, 1000):
        response = client.get(url(collection, "items/v/thumbnail"), params={"t": float(t)})
        assert response.status_code == 200
    assert 1 <= len(decodes) <= item["segments"]
    assert len(set(decodes)) == len(decodes)


def test_a_thumbnail_that_decodes_past_its_time_answers_413(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second segment starts at 3 s, a few frames past the keyframe a seek lands on.
    frames = [picture(RED, True)] * (3 * FPS) + [picture(BLUE, True)] * (3 * FPS)
    upload(client, collection, encode_video(frames, fps=FPS, container="mkv"), "slow")
    monkeypatch.setattr(thumbnails, "_cache", thumbnails.ThumbnailCache())
    check = video_module._Deadline.check

    def slow_frames(self: object) -> None:  # every frame takes 0.1 s to decode
        time.sleep(0.1)
        check(self)  # type: ignore[arg-type]

    monkeypatch.setattr(video_module._Deadline, "check", slow_frames)
    monkeypatch.setattr(thumbnails, "THUMBNAIL_DECODE_S", 0.25)
    started = time.monotonic()
    response = client.get(url(collection, "items/slow/thumbnail"), params={"t": 5.5})
    assert time.monotonic() - started < 2
    assert response.status_code == 413 and error_code(response) == "media_too_large"
    assert "takes more than 0.25 s to decode" in response.json()["error"]["message"]


def garbage_mp4() -> bytes:
    return b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8


def audio_only_mkv() -> bytes:
    return audio_only(red_then_blue("mkv"), "matroska")


def long_video() -> bytes:
    return encode_video([picture(RED, True)] * (9 * FPS), fps=FPS)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: red_then_blue()[: len(red_then_blue()) // 2], 415, "unsupported_media"),
        (lambda: red_then_blue("mkv")[: len(red_then_blue("mkv")) // 2], 415, "unsupported_media"),
        (lambda: red_then_blue("webm")[:200], 415, "unsupported_media"),
        (garbage_mp4, 415, "unsupported_media"),
        (audio_only_mkv, 415, "unsupported_media"),
        (long_video, 413, "media_too_large"),
    ],
    ids=["cut-mp4", "cut-mkv", "head-webm", "garbage", "audio-only", "too-long"],
)
def test_bad_videos_get_4xx_and_change_nothing(
    client: TestClient, collection: str, make: Callable[[], bytes], status: int, code: str
) -> None:
    data = make()
    response = client.post(url(collection), files={"file": ("v.mp4", data)})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert count(client, collection) == 0
    search = client.post(url(collection, "search"), files={"file": ("q.mp4", data)})
    assert search.status_code == status


def test_the_decode_time_limit_answers_413(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(model="mmr-mini", video_decode_seconds=1e-6)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/collections", json={"name": "slow"})
        response = client.post(url("slow"), files={"file": ("v.mp4", red_then_blue())})
        assert response.status_code == 413
        assert "MMR_VIDEO_DECODE_SECONDS" in response.json()["error"]["message"]


def test_a_batch_with_videos_reports_each(client: TestClient, collection: str) -> None:
    files = [
        ("file", ("a.mp4", red_then_blue())),
        ("file", ("b.mp4", garbage_mp4())),
        ("file", ("c.png", image_bytes("RGB"))),
        ("file", ("d.mov", red_then_blue("mov"))),
    ]
    batch = client.post(url(collection, "items/batch"), files=files)
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == [201, 415, 201, 201]
    assert [r["item"]["modality"] for r in results if r["status"] == 201] == [
        "video",
        "image",
        "video",
    ]


def test_the_videos_of_one_request_share_one_decode_time_limit(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each video seems to take 10 s (a clock that jumps after each decode); 15 s in all.
    jumped = [0.0]
    clock = time.monotonic
    monkeypatch.setattr(
        video_module, "time", SimpleNamespace(monotonic=lambda: clock() + jumped[0])
    )
    run = video_module._Decoder.run

    def ten_seconds(self: object, container: object, video: object) -> object:
        out = run(self, container, video)  # type: ignore[arg-type]
        jumped[0] += 10
        return out

    monkeypatch.setattr(video_module._Decoder, "run", ten_seconds)
    settings = make_settings(model="mmr-mini", video_decode_seconds=15)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/collections", json={"name": "many"})
        files = [("file", (f"{i}.mp4", red_then_blue())) for i in range(4)]
        files.insert(2, ("file", ("i.png", image_bytes("RGB"))))
        batch = client.post(url("many", "items/batch"), files=files)
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r["status"] for r in results] == [201, 201, 201, 413, 413]
        assert "all together" in results[3]["error"]["message"]
        embed = client.post("/v1/embed", files=files[:4])
        assert embed.status_code == 413 and "MMR_VIDEO_DECODE_SECONDS" in embed.text
        # Each request has its own: one video at a time still goes in.
        assert client.post(url("many"), files=[files[0]]).status_code == 201


def test_a_model_without_ears_keeps_the_frames(make_settings: Callable[..., Settings]) -> None:
    # Its sound outlasts its pictures: the file is whole though only the frames decode.
    frames = [picture(RED, True)] * (2 * FPS) + [picture(BLUE, True)] * (2 * FPS)
    t = np.arange(7 * RATE) / RATE
    wave = (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with TestClient(create_app(make_settings(model="random:mmr-tiny"))) as client:
        client.post("/v1/collections", json={"name": "deaf"})
        for container in CONTAINERS:
            data = encode_video(frames, fps=FPS, wave=wave, container=container)
            item = upload(client, "deaf", data, container)
            assert item["modality"] == "video" and item["segments"] == 2


def test_replicas_find_a_video_the_other_wrote_at_its_moment(
    tmp_path: Path, database_url: str
) -> None:
    """Two ``mmr serve`` on one database: a video written through one is found, with its
    moment, through the other within the follow bound; a delete through that one reaches
    the first likewise."""
    env = server_env(tmp_path, database_url)
    with ExitStack() as stack:
        a, b = (stack.enter_context(serve(env, tmp_path / f"server-{n}.log")) for n in range(2))
        assert httpx.post(f"{a.url}/v1/collections", json={"name": "clips"}).status_code == 201

        def moment(server: Server) -> tuple[float, float] | None:
            reply = httpx.post(
                f"{server.url}{url('clips', 'search')}",
                files={"file": ("q.png", png(BLUE))},
                data={"modalities": "video"},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text
            hits = reply.json()["results"]
            return (hits[0]["start"], hits[0]["end"]) if hits else None

        assert moment(b) is None  # b has the collection loaded before a writes to it
        files = {"file": ("v.mp4", red_then_blue())}
        written = httpx.post(f"{a.url}{url('clips')}", files=files, data={"id": "v"}, timeout=60)
        assert written.status_code == 201, f"{written.text}\n{log_tail(a.log)}"
        waited_for(lambda: moment(b) is not None)
        assert moment(b) == pytest.approx((2.0, 4.0), abs=0.11)
        assert httpx.delete(f"{b.url}{url('clips', 'items/v')}", timeout=30).status_code == 204
        waited_for(lambda: moment(a) is None)


def test_a_migration_encodes_a_video_again_and_gives_it_the_new_models_ears(
    make_settings: Callable[..., Settings],
) -> None:
    """From a model without ears (frames only) to mmr-mini: the video is decoded and encoded
    again from its original, its sound now among its segments, its moments still found."""
    with TestClient(create_app(make_settings(job_poll_s=0.05))) as client:
        client.post("/v1/collections", json={"name": "clips"})
        assert upload(client, "clips", red_then_blue(), "v")["segments"] == 2
        body = {"type": "migrate", "collection": "clips", "model": "mmr-mini"}
        job = client.post("/v1/jobs", json=body).json()
        deadline = time.monotonic() + 180
        while (done := client.get(f"/v1/jobs/{job['id']}").json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, done
            time.sleep(0.05)
        assert done["status"] == "succeeded", done
        item = client.get(url("clips", "items/v")).json()
        assert item["segments"] > 2 and item["duration"] == pytest.approx(4.0, abs=0.1)
        query = client.post(url("clips", "search"), files={"file": ("q.png", png(BLUE))}).json()
        hit = query["results"][0]
        assert (hit["start"], hit["end"]) == pytest.approx((2.0, 4.0), abs=0.11)


def test_duplicates_of_a_video_are_whole_clips_of_the_same_length(
    client: TestClient, collection: str
) -> None:
    """The same clip in another container pairs with it; a clip of one of its scenes only,
    or of both scenes held twice as long, does not (a whole clip against a whole clip, its
    duration included), and no picture of a scene pairs with a clip."""
    upload(client, collection, red_then_blue("mp4"), "a")
    upload(client, collection, red_then_blue("mkv"), "b")
    red_only = [picture(RED, True)] * (4 * FPS)
    upload(client, collection, encode_video(red_only, fps=FPS, container="mp4"), "red-only")
    slow = [picture(RED, True)] * (4 * FPS) + [picture(BLUE, True)] * (4 * FPS)
    upload(client, collection, encode_video(slow, fps=FPS, container="mp4"), "slow")
    response = client.post(url(collection), files={"file": ("p.png", png(RED))}, data={"id": "p"})
    assert response.status_code == 201, response.text
    listed = client.get(url(collection, "duplicates"), params={"threshold": 0.9})
    assert listed.status_code == 200, listed.text
    pairs = {(p["a"], p["b"]) for p in listed.json()["pairs"]}
    assert pairs == {("a", "b")}, listed.json()
