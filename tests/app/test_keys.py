"""Keys made through /v1/keys: hashed, scoped, revoked at once on every process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code

ROOT = {"Authorization": "Bearer root"}


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(api_keys="root", worker="off"))) as c:
        yield c


def make_key(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/keys", json={"name": "k", **body}, headers=ROOT)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def bearer(made: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {made['key']}"}


def test_a_key_is_shown_once_and_stored_as_its_hash(
    secured: TestClient, settings: Settings, database_url: str
) -> None:
    made = make_key(secured, name="app", scope="read", collections=["photos", "photos"])
    assert set(made) == {"id", "name", "scope", "collections", "key", "created_at"}
    assert made["scope"] == "read" and made["collections"] == ["photos"]
    listed = secured.get("/v1/keys", headers=ROOT).json()["keys"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert "key" not in listed[0]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            [row] = conn.execute(text("SELECT * FROM api_keys")).mappings().all()
    finally:
        engine.dispose()
    assert row["key_hash"] == hashlib.sha256(made["key"].encode()).hexdigest()
    assert made["key"] not in {str(v) for v in row.values()}


def test_scopes(secured: TestClient) -> None:
    reader, writer = make_key(secured, scope="read"), make_key(secured, scope="write")
    admin = make_key(secured, scope="admin")
    assert secured.post("/v1/collections", json={"name": "c"}, headers=bearer(admin)).is_success
    text_item = {"text": "hello", "id": "h"}
    refused = secured.post("/v1/collections/c/items", json=text_item, headers=bearer(reader))
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert "read" in refused.json()["error"]["message"]
    added = secured.post("/v1/collections/c/items", json=text_item, headers=bearer(writer))
    assert added.status_code == 201
    search = secured.post("/v1/collections/c/search", json={"text": "hi"}, headers=bearer(reader))
    assert search.status_code == 200
    for who in (reader, writer):
        assert secured.delete("/v1/collections/c", headers=bearer(who)).status_code == 403
        made = secured.post("/v1/keys", json={"name": "x", "scope": "read"}, headers=bearer(who))
        assert made.status_code == 403
        assert secured.get("/v1/keys", headers=bearer(who)).status_code == 403
    assert secured.get("/v1/keys", headers=bearer(admin)).status_code == 200


def test_a_limited_admin_key_cannot_manage_keys(secured: TestClient) -> None:
    limited = make_key(secured, scope="admin", collections=["c"])
    for method, path in (("GET", "/v1/keys"), ("DELETE", f"/v1/keys/{limited['id']}")):
        response = secured.request(method, path, headers=bearer(limited))
        assert response.status_code == 403 and error_code(response) == "forbidden"
    wider = {"name": "x", "scope": "admin", "collections": None}
    response = secured.post("/v1/keys", json=wider, headers=bearer(limited))
    assert response.status_code == 403


def test_a_limited_admin_key_creates_only_its_collections(secured: TestClient) -> None:
    limited = bearer(make_key(secured, scope="admin", collections=["mine"]))
    assert secured.post("/v1/collections", json={"name": "mine"}, headers=limited).is_success
    other = secured.post("/v1/collections", json={"name": "other"}, headers=limited)
    assert other.status_code == 403 and error_code(other) == "forbidden"
    assert secured.get("/v1/collections/other", headers=ROOT).status_code == 404


def test_deleting_a_key(secured: TestClient) -> None:
    made = make_key(secured, scope="read")
    assert secured.get("/v1/models", headers=bearer(made)).status_code == 200
    assert secured.delete(f"/v1/keys/{made['id']}", headers=ROOT).status_code == 204
    response = secured.get("/v1/models", headers=bearer(made))
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    again = secured.delete(f"/v1/keys/{made['id']}", headers=ROOT)
    assert again.status_code == 404 and error_code(again) == "not_found"
    assert secured.get("/v1/keys", headers=ROOT).json() == {"keys": []}


def test_revocation_holds_at_once_on_every_process(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    """Two servers on one database: a key deleted on one is refused by the other at once."""
    one = make_settings(api_keys="root", worker="off")
    two = make_settings(api_keys="root", worker="off", data_dir=tmp_path / "two")
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        made = make_key(first, scope="write")
        for _ in range(3):  # warm whatever a server might keep
            assert second.get("/v1/collections", headers=bearer(made)).status_code == 200
        assert first.delete(f"/v1/keys/{made['id']}", headers=ROOT).status_code == 204
        assert second.get("/v1/collections", headers=bearer(made)).status_code == 401
        search = second.post("/v1/embed", json={"texts": ["x"]}, headers=bearer(made))
        assert search.status_code == 401  # the fast path too


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_unknown_keys_are_refused(secured: TestClient, header: str) -> None:
    value = "Bearer mmr_nope" if header == "Authorization" else "mmr_nope"
    response = secured.get("/v1/collections", headers={header: value})
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_keys_in_sql_need_auth_on(client: TestClient) -> None:
    """Without MMR_API_KEYS nothing is checked, so a key made then would be a false promise."""
    response = client.post("/v1/keys", json={"name": "k", "scope": "read"})
    assert response.status_code == 409 and error_code(response) == "conflict"
    assert "MMR_API_KEYS" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "scope": "read"},
        {"name": "a\u0000b", "scope": "read"},
        {"name": "\ud800", "scope": "read"},
        {"name": "x" * 256, "scope": "read"},
        {"name": "k", "scope": "root"},
        {"name": "k", "scope": "read", "collections": ["Not A Name"]},
        {"name": "k", "scope": "read", "extra": 1},
    ],
)
def test_bad_key_bodies(secured: TestClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()  # escapes a lone surrogate, which httpx cannot encode
    headers = {**ROOT, "Content-Type": "application/json"}
    response = secured.post("/v1/keys", content=raw, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert error_code(response) in ("malformed_json", "validation_error")


@pytest.mark.parametrize("key_id", ["%00", "a%00b", "x" * 300])
def test_deleting_a_key_that_cannot_exist_is_404(secured: TestClient, key_id: str) -> None:
    # Postgres refuses to compare text holding NUL: such an id is missing, not a 500.
    response = secured.delete(f"/v1/keys/{key_id}", headers=ROOT)
    assert response.status_code == 404, response.text
    assert error_code(response) == "not_found"
