"""Uploads over the limits: 413, decided early, nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code
from tests.factories import image_case, png_header_bytes

LIMIT_MB = 0.25


@pytest.fixture
def small(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(max_upload_mb=LIMIT_MB, max_image_pixels=100_000)
    with TestClient(create_app(settings)) as c:
        c.post("/v1/collections", json={"name": "c"})
        yield c


def count(client: TestClient) -> int:
    return int(client.get("/v1/collections/c").json()["count"])


def test_file_over_the_limit_is_413(small: TestClient) -> None:
    big = image_case("rgb_png") + bytes(int(LIMIT_MB * 1024 * 1024))
    for url in ("/v1/collections/c/items", "/v1/collections/c/search", "/v1/embed"):
        response = small.post(url, files={"file": ("big.png", big)})
        assert response.status_code == 413, (url, response.text)
        assert error_code(response) == "payload_too_large"
    assert count(small) == 0


def test_file_just_over_the_limit_is_413(small: TestClient) -> None:
    # Within the multipart slack of the streaming guard: the exact check still applies.
    data = image_case("rgb_png")
    data += bytes(int(LIMIT_MB * 1024 * 1024) - len(data) + 1)
    response = small.post("/v1/collections/c/items", files={"file": ("x.png", data)})
    assert response.status_code == 413
    assert count(small) == 0


def test_image_over_the_pixel_limit_is_413_from_its_header(small: TestClient) -> None:
    # 4000 x 4000 declared, a few bytes of pixels: refused without decoding.
    response = small.post(
        "/v1/collections/c/items", files={"file": ("x.png", png_header_bytes(4000, 4000))}
    )
    assert response.status_code == 413
    assert error_code(response) == "media_too_large"
    assert count(small) == 0


@pytest.mark.parametrize("case", ["rgb_jpeg", "rgb_png", "webp", "cmyk_tiff"])
def test_truncated_images_are_415(small: TestClient, case: str) -> None:
    data = image_case(case)
    response = small.post("/v1/collections/c/items", files={"file": ("x", data[: len(data) // 2])})
    assert response.status_code == 415
    assert count(small) == 0


def test_declared_length_over_the_limit_is_refused_before_reading(small: TestClient) -> None:
    app = small.app
    received: list[int] = []

    async def receive() -> dict[str, object]:
        received.append(1)
        if len(received) > 10_000:  # the guard did not work: stop instead of hanging
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    status = asyncio.run(_call(app, receive, [(b"content-length", b"999999999999")]))
    assert status == 413
    assert received == []


def test_streamed_body_is_cut_off_at_the_limit(small: TestClient) -> None:
    """A chunked upload of endless bytes gets 413 after about the limit, not the whole body."""
    app = small.app
    chunk = 64 * 1024
    received: list[int] = []

    async def receive() -> dict[str, object]:
        received.append(chunk)
        if sum(received) > 1024 * 1024 * 1024:  # a gigabyte: the guard did not work
            return {"type": "http.disconnect"}
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        return {"type": "http.request", "body": body + b"x" * chunk, "more_body": True}

    headers = [(b"content-type", b"multipart/form-data; boundary=b")]
    status = asyncio.run(_call(app, receive, headers))
    assert status == 413
    assert sum(received) < LIMIT_MB * 1024 * 1024 + 256 * 1024
    assert count(small) == 0


async def _call(app: object, receive: object, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/collections/c/items",
        "raw_path": b"/v1/collections/c/items",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    statuses: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[operator]
    assert len(statuses) == 1
    return statuses[0]
