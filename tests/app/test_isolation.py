"""Tenants: a key limited to collections cannot learn that any other exists, route by route.

The routes come from the OpenAPI document, so a route added later fails here until it is
classified in ROUTES (which scope it needs, what it sends); each is then tried with keys
limited to `alpha` against `beta` (which exists) and `gamma` (which does not): the two
answers must be the same but for the name, and `beta`'s must be 404 where a name is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.fastpath import embed as fastembed
from app.fastpath import search as fastsearch
from app.main import create_app
from app.settings import Settings
from tests.conftest import error_code

ROOT = {"Authorization": "Bearer root"}
MINE, THEIRS, NOBODYS = "alpha", "beta", "gamma"
SCOPES = ("read", "write", "admin")
UNLIMITED = "unlimited admin"  # /v1/keys: an admin key of every collection only


@dataclass(frozen=True)
class Route:
    """How the test calls a route for collection `c`: its scope and what it sends."""

    scope: str
    json: Callable[[str], Any] | None = None
    query: Callable[[str], dict[str, str]] | None = None
    # The status a key limited to alpha gets for beta (404: "as if it did not exist").
    theirs: int = 404
    extra: dict[str, Any] = field(default_factory=dict)


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/v1/models"): Route("read", theirs=200),
    ("GET", "/v1/collections"): Route("read", theirs=200),
    ("POST", "/v1/collections"): Route("admin", json=lambda c: {"name": c}, theirs=403),
    ("GET", "/v1/collections/{name}"): Route("read"),
    ("DELETE", "/v1/collections/{name}"): Route("admin"),
    ("GET", "/v1/collections/{name}/aligners"): Route("read"),
    ("POST", "/v1/collections/{name}/aligners/{version}/activate"): Route("write"),
    ("POST", "/v1/collections/{name}/items"): Route("write", json=lambda c: {"text": "hi"}),
    ("GET", "/v1/collections/{name}/items"): Route("read"),
    ("POST", "/v1/collections/{name}/items/batch"): Route(
        "write", json=lambda c: {"items": [{"text": "hi"}]}
    ),
    ("GET", "/v1/collections/{name}/items/{item_id}"): Route("read"),
    ("PATCH", "/v1/collections/{name}/items/{item_id}"): Route(
        "write", json=lambda c: {"metadata": {"k": 1}}
    ),
    ("DELETE", "/v1/collections/{name}/items/{item_id}"): Route("write"),
    ("GET", "/v1/collections/{name}/items/{item_id}/content"): Route("read"),
    ("GET", "/v1/collections/{name}/items/{item_id}/thumbnail"): Route("read"),
    ("POST", "/v1/collections/{name}/search"): Route("read", json=lambda c: {"text": "hi"}),
    ("GET", "/v1/collections/{name}/duplicates"): Route("read"),
    ("POST", "/v1/embed"): Route("read", json=lambda c: {"texts": ["hi"], "collection": c}),
    ("POST", "/v1/jobs"): Route("write", json=lambda c: {"type": "reindex", "collection": c}),
    ("GET", "/v1/jobs"): Route("read", query=lambda c: {"collection": c}, theirs=200),
    ("GET", "/v1/jobs/{job_id}"): Route("read"),
    ("POST", "/v1/jobs/{job_id}/cancel"): Route("write"),
    ("POST", "/v1/collections/{name}/migration/rollback"): Route("write"),
    ("POST", "/v1/collections/{name}/migration/confirm"): Route("admin"),
    ("GET", "/v1/keys"): Route(UNLIMITED, theirs=403),
    ("POST", "/v1/keys"): Route(
        UNLIMITED, json=lambda c: {"name": "n", "scope": "read", "collections": [c]}, theirs=403
    ),
    ("DELETE", "/v1/keys/{key_id}"): Route(UNLIMITED, theirs=403),
}


@dataclass
class World:
    """A server with alpha and beta (an item and a job each) and keys limited to alpha."""

    client: TestClient
    jobs: dict[str, str]  # collection -> the id of a job of it
    keys: dict[str, dict[str, str]]  # scope -> headers of a key limited to alpha (+ scratch)

    def path(self, template: str, c: str) -> str:
        job = self.jobs.get(c, uuid.uuid4().hex)
        return template.format(name=c, item_id=f"doc-{c}", version=1, job_id=job, key_id=job)

    def call(self, method: str, template: str, c: str, scope: str) -> Any:
        route = ROUTES[(method, template)]
        return self.client.request(
            method,
            self.path(template, c),
            json=route.json(c) if route.json else None,
            params=route.query(c) if route.query else None,
            # One request id for all: an error body repeats it, and answers are compared.
            headers={**self.keys[scope], "X-Request-ID": "isolation"},
        )


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Iterator[World]:
    with TestClient(create_app(make_settings(api_keys="root", worker="off"))) as client:
        jobs = {}
        for c in (MINE, THEIRS):
            assert client.post("/v1/collections", json={"name": c}, headers=ROOT).is_success
            item = {"text": f"a text of {c}", "id": f"doc-{c}"}
            assert client.post(f"/v1/collections/{c}/items", json=item, headers=ROOT).is_success
            job = client.post("/v1/jobs", json={"type": "reindex", "collection": c}, headers=ROOT)
            jobs[c] = job.json()["id"]
        keys = {}
        for scope in SCOPES:
            body = {"name": scope, "scope": scope, "collections": [MINE, "scratch"]}
            made = client.post("/v1/keys", json=body, headers=ROOT).json()
            keys[scope] = {"Authorization": f"Bearer {made['key']}"}
        yield World(client, jobs, keys)


def operations(client: TestClient) -> list[tuple[str, str]]:
    """Every /v1 operation of the OpenAPI document; fails on one ROUTES does not classify."""
    found = []
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method in operations:
            if path.startswith("/v1/") or path == "/v1":
                found.append((method.upper(), path))
            else:
                assert method == "get", f"{method} {path} is open (no key): only GETs may be"
    unclassified = set(found) - set(ROUTES)
    assert not unclassified, f"classify these routes in ROUTES (scope, body): {unclassified}"
    assert not set(ROUTES) - set(found), "ROUTES names routes that no longer exist"
    return found


def as_if(response: Any, world: World) -> tuple[int, str]:
    """A beta answer written as gamma's would be: beta's name and job id replaced."""
    body = response.text.replace(THEIRS, NOBODYS).replace(world.jobs[THEIRS], "JOB")
    return response.status_code, body


def test_another_collection_is_as_if_it_did_not_exist(world: World) -> None:
    for method, template in operations(world.client):
        route = ROUTES[(method, template)]
        for scope in SCOPES:
            theirs = world.call(method, template, THEIRS, scope)
            nobodys = world.call(method, template, NOBODYS, scope)
            gamma_job = world.path("{job_id}", NOBODYS) if "{job_id}" in template else "JOB"
            expected = (nobodys.status_code, nobodys.text.replace(gamma_job, "JOB"))
            where = (method, template, scope)
            if "{job_id}" in template or "{key_id}" in template:
                # the random id gamma gets differs per call: compare by status and code
                assert theirs.status_code == nobodys.status_code, (where, theirs.text)
                assert error_code(theirs) == error_code(nobodys), where
            else:
                assert as_if(theirs, world) == expected, (where, theirs.text, nobodys.text)
            if scope == "admin":
                assert theirs.status_code == route.theirs, (where, theirs.text)
                if route.theirs == 404:
                    assert error_code(theirs) == "not_found", where


def test_scopes_on_its_own_collections(world: World) -> None:
    """Out of scope: 403 `forbidden`; in scope: anything else (`scratch` is the key's but
    does not exist, so nothing is changed)."""
    for method, template in operations(world.client):
        needed = ROUTES[(method, template)].scope
        for scope in SCOPES:
            c = MINE if (method, template) == ("POST", "/v1/collections") else "scratch"
            response = world.call(method, template, c, scope)
            where = (method, template, scope, response.text)
            allowed = needed != UNLIMITED and SCOPES.index(scope) >= SCOPES.index(needed)
            if allowed:
                assert response.status_code not in (401, 403), where
            else:
                assert response.status_code == 403, where
                assert error_code(response) == "forbidden", where


def test_listings_show_only_its_collections(world: World) -> None:
    reader = world.keys["read"]
    listed = world.client.get("/v1/collections", headers=reader).json()["collections"]
    assert [c["name"] for c in listed] == [MINE]
    jobs = world.client.get("/v1/jobs", headers=reader).json()["jobs"]
    assert [j["collection"] for j in jobs] == [MINE]
    everything = world.client.get("/v1/jobs", headers=ROOT).json()["jobs"]
    assert {j["collection"] for j in everything} == {MINE, THEIRS}


def test_search_reaches_only_its_own_items(world: World) -> None:
    reader, c = world.keys["read"], f"/v1/collections/{MINE}/search"
    same = {**reader, "X-Request-ID": "same-request"}  # the error body repeats the id
    by_theirs = world.client.post(c, json={"item_id": f"doc-{THEIRS}"}, headers=same)
    by_nobodys = world.client.post(c, json={"item_id": f"doc-{NOBODYS}"}, headers=same)
    assert by_theirs.status_code == by_nobodys.status_code == 404
    assert by_theirs.text.replace(THEIRS, NOBODYS) == by_nobodys.text
    dim = world.client.get(f"/v1/collections/{MINE}", headers=reader).json()["dim"]
    hits = world.client.post(c, json={"vector": [1.0] * dim, "k": 100}, headers=reader).json()
    assert [h["item"]["id"] for h in hits["results"]] == [f"doc-{MINE}"]


def test_an_unlimited_key_sees_everything(world: World) -> None:
    listed = world.client.get("/v1/collections", headers=ROOT).json()["collections"]
    assert sorted(c["name"] for c in listed) == [MINE, THEIRS]


def test_the_fast_path_applies_the_same_rules(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Search and embed answered below FastAPI: a limited key's own collection is served
    there, another's is as missing there as on the routes."""
    ran: list[str] = []
    search, embed_texts = fastsearch.search, fastembed.embed_texts

    def spy_search(**kwargs: Any) -> Any:
        ran.append(f"search {kwargs['name']}")
        return search(**kwargs)

    def spy_embed(**kwargs: Any) -> Any:
        ran.append(f"embed {kwargs['collection']}")
        return embed_texts(**kwargs)

    monkeypatch.setattr(fastsearch, "search", spy_search)
    monkeypatch.setattr(fastembed, "embed_texts", spy_embed)
    reader = world.keys["read"]
    for c, status in ((MINE, 200), (THEIRS, 404)):
        body = {"texts": ["hi"], "collection": c}
        assert world.client.post("/v1/embed", json=body, headers=reader).status_code == status
        found = world.client.post(
            f"/v1/collections/{c}/search", json={"text": "hi"}, headers=reader
        )
        assert found.status_code == status
    # beta's embed reached the fast path and was refused there; beta's search never got past
    # the key check (its name is in the path)
    assert ran == [f"embed {MINE}", f"search {MINE}", f"embed {THEIRS}"]
