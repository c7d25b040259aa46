"""API keys guard /v1; health, readiness and docs stay open."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

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
