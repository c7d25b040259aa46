"""API keys guard /v1; health, readiness and docs stay open."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.types import Message

from app.auth import supplied_key
from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(api_keys="k1, k2"))) as c:
        yield c


def test_v1_needs_a_key(secured: TestClient) -> None:
    response = secured.get("/v1/collections")
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_wrong_key_is_refused_and_writes_nothing(secured: TestClient) -> None:
    bad = {"Authorization": "Bearer nope"}
    response = secured.post("/v1/collections", json={"name": "x"}, headers=bad)
    assert response.status_code == 401
    listed = secured.get("/v1/collections", headers={"Authorization": "Bearer k1"})
    assert listed.json() == {"collections": []}


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer k1"}, {"Authorization": "bearer k2"}, {"X-API-Key": "k2"}],
)
def test_either_header_works(secured: TestClient, headers: dict[str, str]) -> None:
    assert secured.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/metrics"])
def test_open_routes(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_no_keys_means_no_auth(client: TestClient) -> None:
    assert client.get("/v1/collections").status_code == 200


def body_operations(app: Any) -> list[tuple[str, str]]:
    """Every /v1 operation of the OpenAPI document that takes a body (method, path)."""
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if path.startswith("/v1/") and method in ("post", "put", "patch")
    ]
    assert ("POST", "/v1/collections/{name}/search") in found
    return found


def concrete(path: str) -> str:
    return path.format(name="things", item_id="x", version=1, job_id="j", key_id="k")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}])
def test_no_valid_key_and_malformed_json_is_401_on_every_route(
    secured: TestClient, headers: dict[str, str]
) -> None:
    """Auth comes before the body: a caller without a key never learns how bodies parse."""
    for method, path in body_operations(secured.app):
        response = secured.request(
            method,
            concrete(path),
            content=b'{"not json',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 401, (method, path, response.text)
        assert error_code(response) == "unauthorized"


class CountingBody:
    """An ASGI receive that would hand over a huge body, counting what is taken."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    async def __call__(self) -> Message:
        chunk = b"x" * min(1 << 20, self.size - self.taken)
        self.taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.taken < self.size}


async def call(
    app: Any, method: str, path: str, headers: dict[str, str], body: CountingBody
) -> int:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("test", 1),
        "server": ("test", 80),
        "state": {},
    }
    await app(scope, body, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize("key", [None, "nope"])
def test_a_large_body_without_a_valid_key_is_not_read(secured: TestClient, key: str | None) -> None:
    """50 MB sent without a key (or with a wrong one): 401, and not one byte of it taken."""
    size = 50 * 1024 * 1024
    headers = {"Content-Type": "application/json", "Content-Length": str(size)}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    for method, path in body_operations(secured.app):
        body = CountingBody(size)
        status = secured.portal.call(call, secured.app, method, concrete(path), headers, body)
        assert status == 401, (method, path)
        assert body.taken == 0, (method, path, body.taken)


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
)  # what an HTTP header can carry


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.integers(min_value=0),
    size=st.integers(min_value=0, max_value=1 << 30),
    content_type=st.sampled_from(
        ["application/json", "multipart/form-data; boundary=x", "text/plain", ""]
    ),
    header=st.sampled_from(["authorization", "x-api-key", "x-other"]),
    value=header_text,
)
def test_any_request_without_a_valid_key_is_401_unread(
    secured: TestClient, route: int, size: int, content_type: str, header: str, value: str
) -> None:
    assume(supplied_key({header: value}) not in ("k1", "k2"))  # the secured server's keys
    operations = body_operations(secured.app)
    method, path = operations[route % len(operations)]
    headers = {"Content-Type": content_type, "Content-Length": str(size), header: value}
    body = CountingBody(size)
    status = secured.portal.call(call, secured.app, method, concrete(path), headers, body)
    assert (status, body.taken) == (401, 0), (method, path, headers)


def test_refusals_are_counted(secured: TestClient) -> None:
    assert secured.post("/v1/collections/c/search", content=b"{").status_code == 401
    metrics = secured.get("/metrics").text
    assert 'route="unauthenticated",status="401"' in metrics


def test_a_root_path_does_not_walk_around_the_keys(
    make_settings: Callable[..., Settings],
) -> None:
    """Behind a proxy (`--root-path /api`) the router matches the path without the prefix,
    and so does the key check."""
    app = create_app(make_settings(api_keys="k1"))
    with TestClient(app, root_path="/api") as client:
        assert client.get("/api/v1/collections").status_code == 401
        listed = client.get("/api/v1/collections", headers={"Authorization": "Bearer k1"})
        assert listed.status_code == 200
