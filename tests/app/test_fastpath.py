"""JSON searches answered below FastAPI's routing give the route's answers; errors the search
raises get the route's error bodies; everything else is answered by the route itself, with
the body replayed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import app.fastpath as fastpath
import app.fastpath.pool as fastpool
import app.fastpath.search as fastsearch
from app.access import AccessLog
from app.auth import Authenticate
from app.limits import BodySizeLimit
from app.main import CountInFlight, create_app
from app.settings import Settings
from index.tables import CollectionRow
from tests.conftest import error_code

PATH = "/v1/collections/{}/search"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the searches the fast path ran (successful or not)."""
    seen: list[str] = []
    search = fastsearch.search

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["name"])
        return search(**kwargs)

    monkeypatch.setattr(fastsearch, "search", spy)
    return seen


def add_texts(client: TestClient, name: str, count: int) -> None:
    batch = [{"id": f"t{i}", "text": f"note {i}", "metadata": {"n": i}} for i in range(count)]
    assert client.post(f"/v1/collections/{name}/items/batch", json=batch).status_code == 200


def chunked(body: bytes) -> Iterator[bytes]:
    """A body without Content-Length: the fast path leaves it to the route."""
    yield body


def test_the_fast_path_answers_like_the_route(
    client: TestClient, collection: str, served: list[str]
) -> None:
    add_texts(client, collection, 12)
    vector = client.post("/v1/embed", json={"texts": ["note 3"]}).json()["embeddings"][0]
    for body in (
        {"text": "note 3", "k": 5},
        {"vector": vector, "k": 4, "filter": {"n": [1, 3, 5]}},
        {"item_id": "t7", "k": 3, "modalities": ["text"]},
    ):
        raw = json.dumps(body).encode()
        fast = client.post(PATH.format(collection), content=raw)
        served_before = len(served)
        routed = client.post(
            PATH.format(collection),
            content=chunked(raw),
            headers={"content-type": "application/json"},
        )
        assert len(served) == served_before, "the chunked request went to the route"
        assert fast.status_code == routed.status_code == 200
        assert fast.headers["content-type"] == routed.headers["content-type"]
        assert fast.json() == routed.json()
    assert served == [collection] * 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"text": "note", "k": 5', 400, "malformed_json"),
        (b'{"text": "note", "k": 0}', 422, "validation_error"),
        (b'{"vector": [1.0, 2.0]}', 409, "embedding_space_mismatch"),
        (b'{"item_id": "nope"}', 404, "not_found"),
    ],
)
def test_errors_are_answered_as_the_route_answers_them(
    client: TestClient, collection: str, body: bytes, status: int, code: str
) -> None:
    add_texts(client, collection, 2)
    response = client.post(PATH.format(collection), content=body)
    assert response.status_code == status, response.text
    assert error_code(response) == code


def test_a_search_error_is_answered_in_place_with_the_routes_body(
    client: TestClient, served: list[str]
) -> None:
    same = {"x-request-id": "same-request"}  # an error body repeats the request's id
    fast = client.post(PATH.format("missing"), json={"text": "x"}, headers=same)
    routed = client.post(
        PATH.format("missing"),
        content=chunked(b'{"text": "x"}'),
        headers={"content-type": "application/json", **same},
    )
    assert fast.status_code == routed.status_code == 404
    assert fast.json() == routed.json() and error_code(fast) == "not_found"
    assert served == ["missing"]  # the fast path ran it once and answered its error


def test_an_unexpected_error_goes_to_the_route(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_texts(client, collection, 3)

    def broken(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastsearch, "search", broken)  # the route keeps the real one
    response = client.post(PATH.format(collection), json={"text": "note 1", "k": 1})
    assert response.status_code == 200 and response.json()["results"][0]["item"]["id"] == "t1"


def test_auth_is_checked_before_the_fast_path_searches(
    make_settings: Callable[..., Settings], served: list[str]
) -> None:
    with TestClient(create_app(make_settings(api_keys="k1"))) as client:
        key = {"Authorization": "Bearer k1"}
        assert client.post("/v1/collections", json={"name": "c"}, headers=key).status_code == 201
        refused = client.post(PATH.format("c"), json={"text": "x"})
        wrong = client.post(PATH.format("c"), json={"text": "x"}, headers={"X-API-Key": "k2"})
        allowed = client.post(PATH.format("c"), json={"text": "x"}, headers=key)
    assert refused.status_code == wrong.status_code == 401
    assert allowed.status_code == 200
    assert served == ["c"]


def test_fast_answers_are_counted_in_the_metrics(client: TestClient, collection: str) -> None:
    add_texts(client, collection, 2)
    for _ in range(3):
        assert client.post(PATH.format(collection), json={"text": "note"}).status_code == 200
    metrics = client.get("/metrics").text
    line = next(
        row
        for row in metrics.splitlines()
        if row.startswith("mmr_http_requests_total")
        and 'route="/v1/collections/{name}/search"' in row
        and 'status="200"' in row
    )
    assert float(line.rsplit(" ", 1)[1]) == 3.0


def test_an_oversized_body_is_refused_without_searching(
    make_settings: Callable[..., Settings], served: list[str]
) -> None:
    with TestClient(create_app(make_settings(max_upload_mb=1))) as client:
        client.post("/v1/collections", json={"name": "c"})
        body = json.dumps({"text": "x" * (3 * 1024 * 1024)}).encode()
        response = client.post(PATH.format("c"), content=body)
    assert response.status_code == 413
    assert served == []


@pytest.fixture
def handed_off(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per search the fast path handed to its thread pool."""
    handed: list[int] = []
    pool = fastpool.pool()

    class Counting:
        def submit(self, fn: Any, *args: Any) -> Any:
            handed.append(1)
            return pool.submit(fn, *args)

    monkeypatch.setattr(fastpool, "pool", lambda: Counting())
    return handed


def test_cheap_vector_searches_run_in_place_on_sqlite_only(
    client: TestClient, collection: str, handed_off: list[int], served: list[str]
) -> None:
    add_texts(client, collection, 5)
    vector = client.post("/v1/embed", json={"texts": ["note 3"]}).json()["embeddings"][0]
    handed_off.clear()  # the embedding went through the pool too
    found = client.post(PATH.format(collection), json={"vector": vector, "k": 2})
    assert found.status_code == 200 and found.json()["results"][0]["item"]["id"] == "t3"
    sqlite = client.app.state.settings.resolved_database_url.startswith("sqlite")  # type: ignore[attr-defined]
    # A network database's round trips stay off the event loop.
    assert len(handed_off) == (0 if sqlite else 1)
    for body in (
        {"vector": vector, "filter": {"n": 3}},  # SQL picks the candidates
        {"vector": vector, "modalities": ["text"]},
        {"vector": vector, "k": fastsearch.IN_PLACE_K + 1},  # a long list to read and answer
        {"text": "note 3"},  # the encoder's batcher waits for company
        {"item_id": "t3"},
    ):
        before = len(handed_off)
        assert client.post(PATH.format(collection), json=body).status_code == 200
        assert len(handed_off) == before + 1, body
    assert len(served) == 6


def test_a_big_scan_goes_to_the_pool(
    client: TestClient, collection: str, handed_off: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_texts(client, collection, 5)
    vector = client.post("/v1/embed", json={"texts": ["note 3"]}).json()["embeddings"][0]
    handed_off.clear()  # the embedding went through the pool too
    monkeypatch.setattr(fastsearch, "IN_PLACE_WORK", 4 * len(vector))  # fewer than 5 vectors
    assert client.post(PATH.format(collection), json={"vector": vector}).status_code == 200
    assert len(handed_off) == 1


def test_the_fast_path_sits_outside_fastapis_own_layers(client: TestClient) -> None:
    """Only the request id and access line (which read headers), the key check (which reads
    no body), the count of work in flight (which reads nothing) and the bodies' cap and
    budget (which count the bytes as the fast path reads them) stand in front of it."""
    outermost = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(outermost, AccessLog)
    stack = outermost.app
    assert isinstance(stack, Authenticate)
    assert isinstance(stack.app, CountInFlight)
    assert isinstance(stack.app.app, BodySizeLimit)
    assert isinstance(stack.app.app.app, fastpath.FastPath)


def test_ready_names_only_an_index_that_needs_no_work(client: TestClient, collection: str) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    row = services.stores.collections.get(collection)
    assert services.indexes.ready(row) is services.indexes.get(row)

    def like(**changes: int) -> CollectionRow:
        fields = {"id": row.id, "aligner_version": row.aligner_version}
        return CollectionRow(**{**fields, "index_epoch": row.index_epoch, **changes})

    assert services.indexes.ready(like(index_epoch=row.index_epoch + 1)) is None  # a reindex
    assert services.indexes.ready(like(aligner_version=row.aligner_version + 1)) is None
    assert services.indexes.ready(like(id=row.id + 1000)) is None  # not loaded here


def test_a_search_that_finds_a_write_in_progress_waits_in_a_thread(
    client: TestClient, collection: str, handed_off: list[int]
) -> None:
    add_texts(client, collection, 5)
    vector = client.post("/v1/embed", json={"texts": ["note 3"]}).json()["embeddings"][0]
    handed_off.clear()  # the embedding went through the pool too
    services = client.app.state.services  # type: ignore[attr-defined]
    index = services.indexes.get(services.stores.collections.get(collection)).space.index
    held = threading.Event()

    def write_for_a_while() -> None:
        with index._lock.write():
            held.set()
            time.sleep(0.3)

    writer = threading.Thread(target=write_for_a_while)
    writer.start()
    assert held.wait(5)
    found = client.post(PATH.format(collection), json={"vector": vector, "k": 1})
    writer.join()
    assert found.status_code == 200 and found.json()["results"][0]["item"]["id"] == "t3"
    assert len(handed_off) == 1  # on SQLite too: the event loop never waited for the writer


def test_a_search_that_would_wait_for_a_connection_goes_to_the_pool(
    client: TestClient, collection: str, handed_off: list[int]
) -> None:
    add_texts(client, collection, 5)
    vector = client.post("/v1/embed", json={"texts": ["note 3"]}).json()["embeddings"][0]
    handed_off.clear()  # the embedding went through the pool too
    engine = client.app.state.services.stores.engine  # type: ignore[attr-defined]
    taken = [engine.raw_connection() for _ in range(engine.pool.size())]
    try:
        found = client.post(PATH.format(collection), json={"vector": vector, "k": 1})
    finally:
        for connection in taken:
            connection.close()
    assert found.status_code == 200 and found.json()["results"][0]["item"]["id"] == "t3"
    assert len(handed_off) == 1
