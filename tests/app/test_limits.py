"""Uploads over the limits: 413, decided early, nothing written."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.limits import MULTIPART_SLACK, BodySizeLimit
from app.main import create_app
from app.settings import Settings
from models.media.budget import MB, DecodeBudget
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


async def _call(
    app: object,
    receive: object,
    headers: list[tuple[bytes, bytes]],
    path: str = "/v1/collections/c/items",
    answer: dict[str, object] | None = None,
) -> int:
    """The status of one request through the whole ASGI app (its start message and body in
    ``answer`` when given)."""
    scope = {**_scope(path), "headers": [(b"host", b"test"), *headers]}
    statuses: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))  # type: ignore[call-overload]
            if answer is not None:
                answer["headers"] = dict(message["headers"])  # type: ignore[call-overload]
        elif answer is not None:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")  # type: ignore[operator]

    await app(scope, receive, send)  # type: ignore[operator]
    assert len(statuses) == 1
    return statuses[0]


# Bodies in flight: one process-wide budget (MMR_MAX_BODIES_MB), the fast path's routes too.
BUDGET_MB = 0.5
HELD = 300 * 1024  # one held body: two of them do not fit the budget
FAST_AND_SLOW = ["/v1/collections/c/items", "/v1/collections/c/search", "/v1/embed"]
MULTIPART = (b"content-type", b"multipart/form-data; boundary=b")


@pytest.fixture
def budgeted(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(max_upload_mb=LIMIT_MB * 2, max_bodies_mb=BUDGET_MB)
    app = create_app(settings)
    app.state.bodies.wait_s = 0.2  # the default 2 s wait, shortened for the test
    with TestClient(app) as c:
        c.post("/v1/collections", json={"name": "c"})
        yield c


def _multipart(size: int) -> bytes:
    """A multipart body of exactly ``size`` bytes: one file of an image and padding."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    tail = b"\r\n--b--\r\n"
    data = image_case("rgb_png")
    return head + data + bytes(size - len(head) - len(data) - len(tail)) + tail


def _sender(body: bytes, gate: asyncio.Event | None = None, *, cut: bool = False) -> object:
    """A client's receive: the body once ``gate`` opens (half of it then a disconnect when
    ``cut``), then the client is gone."""
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if gate is not None:
            await gate.wait()
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        if cut:
            return {"type": "http.request", "body": body[: len(body) // 2], "more_body": True}
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


@pytest.mark.parametrize("path", FAST_AND_SLOW)
def test_bodies_beyond_the_budget_get_429_then_room_is_given_back(
    budgeted: TestClient, path: str
) -> None:
    """A body held while it uploads keeps its bytes reserved: a second that does not fit
    waits, then gets 429 with Retry-After; once the first has its answer, all is free."""
    app = budgeted.app
    body = _multipart(HELD)

    async def run() -> tuple[int, int, dict[str, object]]:
        gate = asyncio.Event()
        held = asyncio.create_task(
            _call(app, _sender(body, gate), [MULTIPART, _length(len(body))], path)
        )
        await asyncio.sleep(0.05)  # the first request is in, its body not yet sent
        answer: dict[str, object] = {}
        second = await _call(app, _sender(body), [MULTIPART, _length(len(body))], path, answer)
        gate.set()
        return await held, second, answer

    first, second, answer = asyncio.run(run())
    assert second == 429
    assert answer["headers"][b"retry-after"] == b"1"  # type: ignore[index]
    message = json.loads(answer["body"])["error"]  # type: ignore[arg-type]
    assert message["code"] == "overloaded"
    assert "MMR_MAX_BODIES_MB" in message["message"] and "retry" in message["message"]
    assert first != 429
    assert app.state.bodies.used == 0  # type: ignore[attr-defined]
    # Room again: the same body is taken.
    again = budgeted.post(path, files={"file": ("a.png", image_case("rgb_png"))})
    assert again.status_code != 429, again.text


@pytest.mark.parametrize("path", FAST_AND_SLOW)
def test_a_chunked_body_past_the_budget_gets_429(budgeted: TestClient, path: str) -> None:
    """Without a Content-Length the reservation grows with the bytes received."""
    app = budgeted.app
    body = _multipart(HELD)

    async def run() -> int:
        gate = asyncio.Event()
        held = asyncio.create_task(
            _call(app, _sender(body, gate), [MULTIPART, _length(len(body))], path)
        )
        await asyncio.sleep(0.05)
        chunks = [body[i : i + 32 * 1024] for i in range(0, len(body), 32 * 1024)]

        async def receive() -> dict[str, object]:
            if not chunks:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

        status = await _call(app, receive, [MULTIPART], path)
        gate.set()
        await held
        return status

    assert asyncio.run(run()) == 429
    assert app.state.bodies.used == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", FAST_AND_SLOW)
def test_a_client_gone_mid_body_gives_its_room_back(budgeted: TestClient, path: str) -> None:
    app = budgeted.app
    body = _multipart(HELD)
    headers = [MULTIPART, _length(len(body))]
    asyncio.run(_call_or_gone(app, _sender(body, cut=True), headers, path))
    assert app.state.bodies.used == 0  # type: ignore[attr-defined]


async def _call_or_gone(app: object, receive: object, headers: list[Any], path: str) -> None:
    with contextlib.suppress(Exception):  # whatever the app does when the client is gone
        await app(  # type: ignore[operator]
            {**_scope(path), "headers": [(b"host", b"test"), *headers]}, receive, _ignore
        )


async def _ignore(message: dict[str, object]) -> None:
    pass


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }


def test_a_handler_that_raises_gives_its_room_back() -> None:
    budget = DecodeBudget(MB, wait_s=0.05)

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("the handler failed")

    limit = BodySizeLimit(failing, max_bytes=MB // 2, budget=budget)
    body = b"x" * 1000
    scope = {**_scope("/x"), "headers": [_length(len(body))]}
    with pytest.raises(RuntimeError):
        asyncio.run(limit(scope, _sender(body), _ignore))  # type: ignore[arg-type]
    assert budget.used == 0


def test_a_body_larger_than_the_whole_budget_is_413(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_upload_mb=1, max_bodies_mb=BUDGET_MB)
    with TestClient(create_app(settings)) as client:
        client.post("/v1/collections", json={"name": "c"})
        for path in FAST_AND_SLOW:
            response = client.post(path, files={"file": ("a.png", _multipart(HELD * 2))})
            assert response.status_code == 413, (path, response.text)
            assert error_code(response) == "payload_too_large"
            assert "MMR_MAX_BODIES_MB" in response.json()["error"]["message"]
        assert client.app.state.bodies.used == 0  # type: ignore[attr-defined]


def test_the_default_budget_takes_the_largest_upload_many_times() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_bodies_bytes >= 2 * (settings.max_upload_bytes + MULTIPART_SLACK)


@pytest.mark.parametrize("path", FAST_AND_SLOW)
def test_a_client_gone_mid_body_is_not_a_server_error(
    budgeted: TestClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody is left to answer, and nothing went wrong in the server: no 500 is sent or
    logged as an unhandled error (it would page an operator for every dropped upload)."""
    app = budgeted.app
    body = _multipart(HELD)
    sent: list[dict[str, object]] = []

    async def record(message: dict[str, object]) -> None:
        sent.append(message)

    async def run() -> None:
        scope = {**_scope(path), "headers": [(b"host", b"test"), MULTIPART, _length(len(body))]}
        with contextlib.suppress(Exception):
            await app(scope, _sender(body, cut=True), record)  # type: ignore[operator]

    with caplog.at_level("ERROR"):
        asyncio.run(run())
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()]
    assert all(m.get("status") != 500 for m in sent), sent
