"""POST /v1/embed answered below FastAPI's routing: the route's answers; an error the service
raises gets the route's error body without running twice; a body the fast path does not
vouch for, and an unexpected error, go to the route. Images wait for their forward in no
thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import app.fastpath.embed as fastembed
import app.fastpath.pool as fastpool
import app.services.embed as embed_service
from app.main import create_app
from app.settings import Settings
from models.errors import Overloaded
from tests.app.test_multipart import body_of
from tests.conftest import error_code
from tests.factories import audio_bytes, image_case

BOUNDARY = b"fast-embed-7c2"
MULTIPART = "multipart/form-data; boundary=" + BOUNDARY.decode()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the fast path embedded ("texts" or "files"), one entry per call."""
    seen: list[str] = []
    texts, files = fastembed.embed_texts, fastembed.stage_files

    def spy_texts(**kwargs: Any) -> Any:
        seen.append("texts")
        return texts(**kwargs)

    def spy_files(**kwargs: Any) -> Any:
        seen.append("files")
        return files(**kwargs)

    monkeypatch.setattr(fastembed, "embed_texts", spy_texts)
    monkeypatch.setattr(fastembed, "stage_files", spy_files)
    return seen


def chunked(body: bytes) -> Iterator[bytes]:
    """A body without Content-Length: the fast path leaves it to the route."""
    yield body


def both(client: TestClient, body: bytes, ctype: str) -> tuple[Any, Any]:
    """The same request answered by the fast path and by the route (with one request id,
    which an error body repeats)."""
    headers = {"content-type": ctype, "x-request-id": "same-request"}
    fast = client.post("/v1/embed", content=body, headers=headers)
    routed = client.post("/v1/embed", content=chunked(body), headers=headers)
    return fast, routed


def files_body(*files: bytes, fields: dict[str, str] | None = None) -> bytes:
    parts: list[tuple[str, str | None, bytes, str | None]] = [
        ("file", f"f{i}.png", data, "image/png") for i, data in enumerate(files)
    ]
    parts += [(k, None, v.encode(), None) for k, v in (fields or {}).items()]
    return body_of(parts, BOUNDARY)


def assert_alike(fast: Any, routed: Any) -> None:
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"]
    a, b = fast.json(), routed.json()
    assert {k: v for k, v in a.items() if k != "embeddings"} == {
        k: v for k, v in b.items() if k != "embeddings"
    }
    assert np.allclose(a["embeddings"], b["embeddings"], atol=1e-6)


def test_the_fast_path_embeds_like_the_route(
    client: TestClient, collection: str, served: list[str]
) -> None:
    for raw in (
        b'{"texts": ["a red square", "a blue circle"]}',
        b'{"texts": ["a red square"], "collection": "%s"}' % collection.encode(),
    ):
        assert_alike(*both(client, raw, "application/json"))
    images = (image_case("rgb_png"), image_case("l_png", seed=3))
    assert_alike(*both(client, files_body(*images), MULTIPART))
    assert_alike(*both(client, files_body(images[0], fields={"collection": collection}), MULTIPART))
    assert served == ["texts", "texts", "files", "files"]


def test_what_httpx_sends_takes_the_fast_path(client: TestClient, served: list[str]) -> None:
    files = [("file", ("a.png", image_case("rgb_png"), "image/png"))]
    response = client.post("/v1/embed", files=files)
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 1
    assert served == ["files"]


def test_a_service_error_is_answered_in_place_once(
    client: TestClient, served: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    decode = embed_service.decode_upload

    def counting(data: bytes, **kwargs: Any) -> Any:
        decoded.append(1)
        return decode(data, **kwargs)

    monkeypatch.setattr(embed_service, "decode_upload", counting)
    body = files_body(b"garbage")
    fast, routed = both(client, body, MULTIPART)
    assert fast.status_code == routed.status_code == 415
    assert fast.json() == routed.json() and error_code(fast) == "unsupported_media"
    assert decoded == [1, 1]  # once by the fast path, once by the route: never twice each
    assert served == ["files"]
    too_many = client.post("/v1/embed", json={"texts": ["x"] * 257})
    assert too_many.status_code == 422 and served == ["files", "texts"]


def test_overload_is_answered_in_place_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(**_: Any) -> Any:
        raise Overloaded("the image encoder has 512 inputs waiting")

    monkeypatch.setattr(fastembed, "stage_files", refused)  # the route keeps the real one
    response = client.post(
        "/v1/embed", content=files_body(image_case("rgb_png")), headers={"content-type": MULTIPART}
    )
    assert response.status_code == 429 and error_code(response) == "overloaded"
    assert response.headers["retry-after"] == "1"


def test_an_unexpected_error_goes_to_the_route(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastembed, "embed_texts", broken)  # the route keeps the real one
    response = client.post("/v1/embed", json={"texts": ["a cat"]})
    assert response.status_code == 200 and len(response.json()["embeddings"]) == 1


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b'{"texts": ["x"]', "application/json", 400, "malformed_json"),
        (b'{"texts": []}', "application/json", 422, "validation_error"),
        (b'{"texts": ["x"], "k": 1}', "application/json", 422, "validation_error"),
        (body_of([("collection", None, b"c", None)], BOUNDARY), MULTIPART, 422, None),
        (body_of([("file", None, b"text", None)], BOUNDARY), MULTIPART, 422, None),
        (body_of([("upload", "a.png", b"x", None)], BOUNDARY), MULTIPART, 422, None),
        (files_body(b"x", fields={"k": "1"}), MULTIPART, 422, "validation_error"),
        (files_body(b"x", fields={"collection": "no such!"}), MULTIPART, 422, None),
        (b"texts=x", "application/x-www-form-urlencoded", 415, None),
    ],
)
def test_a_body_the_fast_path_does_not_vouch_for_goes_to_the_route(
    client: TestClient, served: list[str], body: bytes, ctype: str, status: int, code: str | None
) -> None:
    fast, routed = both(client, body, ctype)
    assert fast.status_code == routed.status_code == status, fast.text
    assert fast.json() == routed.json()
    if code is not None:
        assert error_code(fast) == code
    assert served == []


def test_a_charset_parameter_goes_to_the_route(client: TestClient, served: list[str]) -> None:
    body = files_body(image_case("rgb_png"))
    response = client.post(
        "/v1/embed", content=body, headers={"content-type": MULTIPART + "; charset=utf-8"}
    )
    assert response.status_code == 200 and served == []


def test_auth_is_checked_before_the_fast_path_embeds(
    make_settings: Callable[..., Settings], served: list[str]
) -> None:
    with TestClient(create_app(make_settings(api_keys="k1"))) as client:
        refused = client.post("/v1/embed", json={"texts": ["x"]})
        allowed = client.post(
            "/v1/embed", json={"texts": ["x"]}, headers={"Authorization": "Bearer k1"}
        )
    assert refused.status_code == 401 and allowed.status_code == 200
    assert served == ["texts"]


def test_fast_answers_and_errors_are_counted(client: TestClient) -> None:
    assert client.post("/v1/embed", json={"texts": ["x"]}).status_code == 200
    garbage = client.post(
        "/v1/embed", content=files_body(b"garbage"), headers={"content-type": MULTIPART}
    )
    assert garbage.status_code == 415
    rows = [
        row
        for row in client.get("/metrics").text.splitlines()
        if row.startswith("mmr_http_requests_total") and 'route="/v1/embed"' in row
    ]
    counts = {row.split('status="')[1].split('"')[0]: float(row.rsplit(" ", 1)[1]) for row in rows}
    assert counts == {"200": 1.0, "415": 1.0}


def test_images_wait_for_their_forward_in_no_thread(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread for the fast path, six requests: while the first forward runs, the other
    five are decoded and queued (a thread blocked on the first forward would hold them back),
    and the next forward takes them together."""
    decoder = ThreadPoolExecutor(1)
    monkeypatch.setattr(fastpool, "decoders", lambda: decoder)
    monkeypatch.setattr(fastpool, "pool", lambda: decoder)
    settings = make_settings(batch_streams=1, batch_wait_ms=0)
    with TestClient(create_app(settings)) as client:
        encoder = client.app.state.services.embedder.encoder  # type: ignore[attr-defined]
        forward, sizes, gate = encoder.forward, [], threading.Event()

        def gated(kind: str, batch: Any, *, alone: bool = True) -> Any:
            if kind == "image":
                sizes.append(len(batch))
                if len(sizes) == 1:
                    gate.wait(30)
            return forward(kind, batch, alone=alone)

        encoder.forward = gated
        batcher = encoder._batcher("image")
        body = files_body(image_case("rgb_png"))

        def post(_: int) -> Any:
            return client.post("/v1/embed", content=body, headers={"content-type": MULTIPART})

        with ThreadPoolExecutor(6) as callers:
            # The first request alone, held in its forward; then the other five arrive and
            # must be decoded and queued while it is held.
            first = callers.submit(post, 0)
            deadline = time.monotonic() + 30
            while not sizes:
                assert time.monotonic() < deadline, "the first forward never began"
                time.sleep(0.01)
            rest = [callers.submit(post, i) for i in range(1, 6)]
            while batcher.waiting_rows != 5:
                assert time.monotonic() < deadline, (sizes, batcher.waiting_rows)
                time.sleep(0.01)
            gate.set()
            answers = [first.result(), *(r.result() for r in rest)]
            assert [a.status_code for a in answers] == [200] * 6
    decoder.shutdown()
    assert sizes == [1, 5]


def test_a_failed_decode_withdraws_its_announcement(client: TestClient) -> None:
    batcher = client.app.state.services.embedder.encoder._batcher("image")  # type: ignore[attr-defined]
    for body in (files_body(b"garbage"), files_body(image_case("rgb_png"), b"garbage")):
        response = client.post("/v1/embed", content=body, headers={"content-type": MULTIPART})
        assert response.status_code == 415
    assert batcher._incoming == 0 and batcher.waiting_rows == 0
    ok = client.post(
        "/v1/embed", content=files_body(image_case("rgb_png")), headers={"content-type": MULTIPART}
    )
    assert ok.status_code == 200


def test_sounds_among_the_files_take_the_whole_call(
    make_settings: Callable[..., Settings], served: list[str]
) -> None:
    """A sound among images: every file embedded by the blocking service call, in order."""
    image = image_case("rgb_png")
    mixed = files_body(image, audio_bytes("WAV"), image)
    with TestClient(create_app(make_settings(model="mmr-mini"))) as client:
        fast, routed = both(client, mixed, MULTIPART)
        batcher = client.app.state.services.embedder.encoder._batcher("image")  # type: ignore[attr-defined]
        assert batcher._incoming == 0
    assert_alike(fast, routed)
    rows = np.asarray(fast.json()["embeddings"])
    assert rows.shape == (3, 128) and np.allclose(rows[0], rows[2], atol=1e-6)
    assert served == ["files"]
