"""Health, readiness, metrics, models, OpenAPI."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from tests.conftest import TEST_MODEL


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_names_the_active_model(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["model"]["id"] == TEST_MODEL
    assert body["fallback"] is False


def test_readyz_and_metrics_say_how_far_the_indexes_follow_sql(
    client: TestClient, collection: str
) -> None:
    """Invariant 8: a process's lag behind SQL is the seconds since its least recent index
    last matched SQL; healthy, about the follow interval."""
    written = client.post(f"/v1/collections/{collection}/items", json={"id": "a", "text": "a"})
    assert written.status_code == 201, written.text
    interval = client.app.state.settings.follow_interval_s  # type: ignore[attr-defined]
    time.sleep(3 * interval)
    replication = client.get("/readyz").json()["replication"]
    assert replication["collections"] == 1
    assert 0 <= replication["lag_s"] < 2.0
    (slowest,) = replication["slowest"]
    assert slowest["collection"] == collection and slowest["position"] >= 1
    assert slowest["lag_s"] == replication["lag_s"]
    exposed = client.get("/metrics").text.splitlines()
    lag = [line for line in exposed if line.startswith("mmr_replication_lag_seconds ")]
    assert len(lag) == 1 and 0 <= float(lag[0].split()[1]) < 2.0
    series = f'mmr_replication_position{{collection="{collection}"}}'
    (position,) = [line for line in exposed if line.startswith(series)]
    assert float(position.split()[1]) == slowest["position"]
    assert client.delete(f"/v1/collections/{collection}").status_code == 204
    assert series not in client.get("/metrics").text  # a dropped collection's series go
    assert client.get("/readyz").json()["replication"]["slowest"] == []


def test_readyz_is_503_when_the_database_is_gone(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    healthy = services.engine
    services.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        response = client.get("/readyz")
    finally:
        services.engine.dispose()
        services.engine = healthy
    assert response.status_code == 503
    assert response.json()["database"] is False


def test_metrics_are_prometheus_text(client: TestClient, collection: str) -> None:
    client.get(f"/v1/collections/{collection}")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'route="/v1/collections/{name}"' in response.text
    assert "mmr_http_request_seconds_bucket" in response.text


def test_models_route(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["active"]["id"] == TEST_MODEL
    assert body["active"]["dim"] == 64
    assert body["active"]["modalities"] == ["image", "text"]
    assert body["active"]["fallback"] is False
    assert "ViT-B-32" in body["architectures"]
    assert "mmr-tiny" in body["architectures"]


def test_openapi_documents_every_route_with_both_body_types(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/models",
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/items",
        "/v1/collections/{name}/items/batch",
        "/v1/collections/{name}/items/{item_id}",
        "/v1/collections/{name}/items/{item_id}/content",
        "/v1/collections/{name}/search",
        "/v1/embed",
    ):
        assert path in paths, path
    search_body = paths["/v1/collections/{name}/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(search_body)
    assert search_body["application/json"]["schema"]["examples"]
    assert client.get("/docs").status_code == 200
