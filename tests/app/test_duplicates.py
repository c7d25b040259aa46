"""GET /v1/collections/{name}/duplicates on SQLite and Postgres: the pairs are numpy's
all-pairs over the stored vectors, in pages that concatenate to the whole list, exactly or
through the index; recordings pair as whole clips; bad input is a clear 4xx; keys see only
their collections; the work per request is bounded."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.services import duplicates as service
from app.settings import Settings
from index.builds import current_vectors
from tests.conftest import error_code
from tests.factories import audio_bytes, image_bytes, services_of

WORDS = ["a red circle", "a blue square", "a green star", "a dog", "a cat", "the sea"]
EDGE = 1e-5  # float32 rounding of one product, computed two ways


def url(name: str) -> str:
    return f"/v1/collections/{name}/duplicates"


def listing(client: TestClient, name: str, **params: Any) -> list[dict[str, Any]]:
    """Every pair, page after page."""
    pairs: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = params | ({"cursor": cursor} if cursor else {})
        page = client.get(url(name), params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["pairs"]) <= params.get("limit", 100)
        pairs += body["pairs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return pairs
        assert body["pairs"], "a page before the last is never empty"
    raise AssertionError("the pages never ended")


def fill(client: TestClient, texts: list[str]) -> str:
    name = f"d{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    for n, text in enumerate(texts):
        body = {"id": f"i{n}", "text": text}
        assert client.post(f"/v1/collections/{name}/items", json=body).status_code == 201
    return name


def stored(client: TestClient, name: str) -> tuple[list[str], np.ndarray]:
    """Ids in the order they were stored, and their stored vectors."""
    services = services_of(client)
    row = services.stores.collections.get(name)
    live = services.indexes.get(row)
    ids, vectors = [], []
    for chunk in services.stores.items.iter_stored(collection_id=row.id):
        found = services.stores.items.summaries(collection_id=row.id, pks=[s.pk for s in chunk])
        for s in chunk:
            ids.append(found[s.pk].external_id)
            vectors.append(current_vectors(s, live.aligner, row.dim))
    return ids, np.concatenate(vectors)


def assert_all_pairs(client: TestClient, name: str, pairs: list[dict[str, Any]], t: float) -> None:
    """The listing is numpy's all-pairs at ``t``: each pair once, stored-first item as a,
    best first then by a and b (in stored order), scores as numpy's."""
    ids, vectors = stored(client, name)
    order = {item: n for n, item in enumerate(ids)}
    full = (vectors @ vectors.T).astype(np.float64)
    got = {(order[p["a"]], order[p["b"]]): p["score"] for p in pairs}
    assert len(got) == len(pairs), "a pair came twice"
    assert all(a < b for a, b in got), "a is the item stored first"
    i, j = np.nonzero(np.triu(full >= t + EDGE, k=1))
    assert set(zip(i.tolist(), j.tolist(), strict=True)) <= set(got)
    for (a, b), score in got.items():
        assert abs(score - min(full[a, b], 1.0)) <= EDGE and score >= t - EDGE
    keys = [(-p["score"], order[p["a"]], order[p["b"]]) for p in pairs]
    assert keys == sorted(keys)


@pytest.fixture(params=["exact", "index"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way the pairs are found: exactly, or through the index (for every size)."""
    if request.param == "index":
        monkeypatch.setattr(service, "MAX_WORK", 10**12)
    return str(request.param)


@pytest.fixture
def client(make_settings: Callable[..., Settings], path: str) -> Iterator[TestClient]:
    exact_max = 20_000 if path == "exact" else 0
    with TestClient(create_app(make_settings(duplicates_exact_max=exact_max))) as c:
        yield c


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.sampled_from(WORDS), min_size=0, max_size=9),
    threshold=st.floats(0.05, 1.0, allow_subnormal=False),
    limit=st.integers(1, 4),
)
def test_the_pages_are_numpys_all_pairs(
    client: TestClient, texts: list[str], threshold: float, limit: int
) -> None:
    name = fill(client, texts)
    pairs = listing(client, name, threshold=threshold, limit=limit)
    if texts:
        assert_all_pairs(client, name, pairs, threshold)
    else:
        assert pairs == []


def test_copies_pair_at_the_default_threshold(client: TestClient) -> None:
    name = fill(client, ["a dog", "a cat", "a dog", "the sea", "a dog"])
    pairs = listing(client, name)
    assert {(p["a"], p["b"]) for p in pairs} == {("i0", "i2"), ("i0", "i4"), ("i2", "i4")}
    assert [p["score"] for p in pairs] == [1.0, 1.0, 1.0]


def test_a_page_continues_where_the_last_ended_while_the_collection_changes(
    client: TestClient,
) -> None:
    """A cursor is a place in the order: pairs of deleted items drop out, later pairs of
    new items appear, and no pair comes twice."""
    name = fill(client, ["a dog", "a dog", "a cat", "a cat", "the sea", "the sea"])
    first = client.get(url(name), params={"limit": 1}).json()
    assert first["pairs"][0] == {"a": "i0", "b": "i1", "score": 1.0}
    assert client.delete(f"/v1/collections/{name}/items/i3").status_code == 204
    body = {"id": "i6", "text": "the sea"}
    assert client.post(f"/v1/collections/{name}/items", json=body).status_code == 201
    rest = listing(client, name, cursor=first["next_cursor"], limit=1)
    assert [(p["a"], p["b"]) for p in rest] == [("i4", "i5"), ("i4", "i6"), ("i5", "i6")]


def test_modality_keeps_to_one_and_modalities_never_mix(client: TestClient) -> None:
    name = fill(client, ["a dog", "a dog"])
    picture = image_bytes("RGB", seed=3)
    for item in ("p1", "p2"):
        form = {"id": item}
        got = client.post(
            f"/v1/collections/{name}/items", files={"file": ("p.png", picture)}, data=form
        )
        assert got.status_code == 201, got.text
    everything = listing(client, name, threshold=1e-6)
    assert {(p["a"], p["b"]) for p in everything} == {("i0", "i1"), ("p1", "p2")}
    images = listing(client, name, threshold=1e-6, modality="image")
    assert [(p["a"], p["b"]) for p in images] == [("p1", "p2")]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"threshold": 0}, 422),
        ({"threshold": -0.5}, 422),
        ({"threshold": 1.5}, 422),
        ({"threshold": "nan"}, 422),
        ({"threshold": "inf"}, 422),
        ({"threshold": "high"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 1001}, 422),
        ({"modality": "smell"}, 422),
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "eyJhIjogMX0"}, 400),  # {"a": 1}: no score
        ({"cursor": "eyJzIjogMC45LCAiYSI6IC0xLCAiYiI6IDJ9"}, 400),  # a key below zero
        ({"cursor": "x" * 600}, 422),
    ],
)
def test_bad_parameters_get_a_clear_4xx(
    client: TestClient, params: dict[str, Any], status: int
) -> None:
    name = fill(client, ["a dog", "a dog"])
    response = client.get(url(name), params=params)
    assert response.status_code == status, response.text
    error_code(response)


def test_an_unknown_collection_is_404(client: TestClient) -> None:
    response = client.get(url("nothing-here"))
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_a_listing_is_computed_once_per_collection_state(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = fill(client, ["a dog", "a dog", "a cat"])
    computed = []
    compute = service._compute
    monkeypatch.setattr(service, "_compute", lambda *a: computed.append(1) or compute(*a))
    first = listing(client, name, limit=1)
    assert listing(client, name, limit=1) == first
    assert len(computed) == 1
    body = {"id": "i9", "text": "a cat"}
    assert client.post(f"/v1/collections/{name}/items", json=body).status_code == 201
    assert ("i2", "i9") in {(p["a"], p["b"]) for p in listing(client, name)}
    assert len(computed) == 2


def test_one_computation_at_a_time_and_the_next_gets_429(client: TestClient) -> None:
    name = fill(client, ["a dog", "a dog"])
    finder = services_of(client).duplicates
    assert finder.gate.acquire(timeout=1)
    try:
        response = client.get(url(name))
        assert response.status_code == 429
        assert error_code(response) == "overloaded"
        assert response.headers["retry-after"]
    finally:
        finder.gate.release()
    assert client.get(url(name)).status_code == 200


def test_listings_beyond_the_gate_get_429_at_once_while_other_routes_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one listing computes, more listings than the server has threads get 429 at
    once (none waits in a thread), and another route still answers."""
    name = fill(client, ["a dog", "a dog"])
    started, release = threading.Event(), threading.Event()
    compute = service._compute

    def slow(*args: Any) -> Any:
        started.set()
        release.wait(30)
        return compute(*args)

    monkeypatch.setattr(service, "_compute", slow)
    with ThreadPoolExecutor(50) as pool:
        first = pool.submit(client.get, url(name))
        try:
            assert started.wait(10)
            begun = time.monotonic()
            more = [
                pool.submit(client.get, url(name), params={"threshold": 0.5 + n / 100})
                for n in range(45)
            ]
            statuses = [f.result(timeout=60).status_code for f in more]
            other = client.get(f"/v1/collections/{name}")
            elapsed = time.monotonic() - begun
        finally:
            release.set()
        assert first.result(timeout=30).status_code == 200
    assert statuses == [429] * 45
    assert other.status_code == 200
    assert elapsed < 5, f"the refusals and the other route took {elapsed:.1f} s"


def test_a_listing_past_max_pairs_is_refused_never_cut(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More pairs at the threshold than one listing holds: 422 saying to raise the
    threshold, never a last page that looks complete; exactly MAX_PAIRS is listed whole."""
    monkeypatch.setattr(service, "MAX_PAIRS", 3)
    name = fill(client, ["a dog", "a dog", "a dog", "a cat"])  # 3 pairs
    assert len(listing(client, name, limit=1)) == 3
    body = {"id": "i9", "text": "a dog"}  # 6 pairs now
    assert client.post(f"/v1/collections/{name}/items", json=body).status_code == 201
    for params in ({"limit": 1}, {"limit": 1000}):
        response = client.get(url(name), params=params)
        assert response.status_code == 422, response.text
        assert error_code(response) == "validation_error"
        assert "raise the threshold" in response.json()["error"]["message"]


@pytest.mark.parametrize("exact_max", [1])
def test_work_past_the_bound_is_refused_with_what_to_do(
    make_settings: Callable[..., Settings], exact_max: int
) -> None:
    """A flat index of 4 items compares 16 vectors through the index: more than the exact
    work of 1 item allows: refused, naming the way out."""
    with TestClient(create_app(make_settings(duplicates_exact_max=exact_max))) as c:
        name = fill(c, ["a dog", "a dog", "a cat", "a cat"])
        response = c.get(url(name))
        assert response.status_code == 422, response.text
        assert error_code(response) == "validation_error"
        assert "reindex" in response.json()["error"]["message"]


def test_the_index_path_does_no_more_work_than_the_largest_exact_listing(
    make_settings: Callable[..., Settings],
) -> None:
    """6 items over an exact bound of 5 go through a flat index: 36 comparisons, each
    costing more than an exact one, against 12 for the largest exact listing: refused."""
    with TestClient(create_app(make_settings(duplicates_exact_max=5))) as c:
        name = fill(c, ["a dog"] * 6)
        response = c.get(url(name))
        assert response.status_code == 422, response.text
        assert "modality" in response.json()["error"]["message"]


def test_one_modality_counts_only_its_items_against_the_bounds(
    make_settings: Callable[..., Settings],
) -> None:
    """4 items over an exact bound of 2 are refused; the 2 images of them are listed."""
    with TestClient(create_app(make_settings(duplicates_exact_max=2))) as c:
        name = fill(c, ["a dog", "a dog"])
        picture = image_bytes("RGB", seed=3)
        for item in ("p1", "p2"):
            sent = c.post(
                f"/v1/collections/{name}/items",
                files={"file": ("p.png", picture)},
                data={"id": item},
            )
            assert sent.status_code == 201, sent.text
        refused = c.get(url(name))
        assert refused.status_code == 422, refused.text
        assert "modality=image" in refused.json()["error"]["message"]
        images = listing(c, name, modality="image")
        assert [(p["a"], p["b"]) for p in images] == [("p1", "p2")]


@pytest.mark.parametrize("exact_max", [20_000, 0])
def test_a_listing_past_its_deadline_stops_and_frees_the_server(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, exact_max: int
) -> None:
    """The deadline is checked between blocks of work: past it the listing stops with 422
    and what to do, the gate is free again, and nothing is kept."""
    monkeypatch.setattr(service, "MAX_WORK", 10**12)
    settings = make_settings(duplicates_exact_max=exact_max, duplicates_deadline_s=0.001)
    with TestClient(create_app(settings)) as c:
        name = fill(c, ["a dog", "a dog", "a cat"])
        slow = service._stored

        def stored(*args: Any) -> Iterator[Any]:
            for chunk in slow(*args):
                time.sleep(0.01)
                yield chunk

        monkeypatch.setattr(service, "_stored", stored)
        response = c.get(url(name))
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "MMR_DUPLICATES_DEADLINE_S" in message and "modality" in message
        finder = services_of(c).duplicates
        assert not finder.cache
        assert finder.gate.acquire(blocking=False)
        finder.gate.release()


def test_a_key_sees_only_its_collections(make_settings: Callable[..., Settings]) -> None:
    root = {"Authorization": "Bearer root"}
    with TestClient(create_app(make_settings(api_keys="root", worker="off"))) as c:
        for name in ("mine", "theirs"):
            assert c.post("/v1/collections", json={"name": name}, headers=root).status_code == 201
        made = c.post(
            "/v1/keys", json={"name": "k", "scope": "read", "collections": ["mine"]}, headers=root
        ).json()
        key = {"Authorization": f"Bearer {made['key']}"}
        assert c.get(url("mine"), headers=key).status_code == 200
        theirs = c.get(url("theirs"), headers=key)
        assert theirs.status_code == 404
        assert error_code(theirs) == "not_found"
        assert c.get(url("mine")).status_code == 401


def test_every_process_lists_what_another_wrote(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    one = make_settings()
    two = make_settings(data_dir=tmp_path / "two")
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        name = fill(first, ["a dog", "a cat"])
        assert listing(second, name) == []
        body = {"id": "again", "text": "a dog"}
        assert first.post(f"/v1/collections/{name}/items", json=body).status_code == 201
        assert [(p["a"], p["b"]) for p in listing(second, name)] == [("i0", "again")]
        assert first.delete(f"/v1/collections/{name}/items/i0").status_code == 204
        assert listing(second, name) == []


def test_through_the_index_a_process_lists_what_another_wrote_once_it_follows(
    make_settings: Callable[..., Settings], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process answers from its own index: what it lists while its index lags a
    write is not kept once the index follows."""
    monkeypatch.setattr(service, "MAX_WORK", 10**12)
    one = make_settings()
    two = make_settings(data_dir=tmp_path / "two", duplicates_exact_max=0)
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        name = fill(first, ["a dog", "a dog"])
        assert [(p["a"], p["b"]) for p in listing(second, name)] == [("i0", "i1")]
        indexes = services_of(second).indexes
        with monkeypatch.context() as paused:  # the second's follower falls behind
            paused.setattr(indexes, "catch_up", lambda live, row: None)
            body = {"id": "i1", "text": "a cat"}  # i1 is no longer a copy of i0
            assert first.post(f"/v1/collections/{name}/items", json=body).status_code == 200
            lagging = [(p["a"], p["b"]) for p in listing(second, name)]
            assert lagging == [("i0", "i1")], "its index still holds i1 as it was"
        deadline = time.monotonic() + 10
        while listing(second, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listing(second, name) == []


# --- recordings: whole clips ------------------------------------------------------------


@pytest.fixture
def audio_client(make_settings: Callable[..., Settings], path: str) -> Iterator[TestClient]:
    """mmr-mini (it has ears), recordings up to a minute."""
    exact_max = 20_000 if path == "exact" else 0
    settings = make_settings(model="mmr-mini", duplicates_exact_max=exact_max)
    with TestClient(create_app(settings)) as c:
        yield c


def test_recordings_pair_as_whole_clips_of_agreeing_durations(audio_client: TestClient) -> None:
    """Two copies of a 12 s tone pair; the same tone at 6 s (a clip's part) does not, nor
    its one-segment 3 s cut, nor a picture: whatever the threshold."""
    c = audio_client
    name = f"d{uuid.uuid4().hex[:10]}"
    assert c.post("/v1/collections", json={"name": name}).status_code == 201
    files = {
        "long1": audio_bytes(seconds=12.0),
        "long2": audio_bytes(seconds=12.0, freq=441.0),
        "half": audio_bytes(seconds=6.0),
        "cut": audio_bytes(seconds=3.0),
        "cut2": audio_bytes(seconds=3.0, freq=441.0),
        "picture": image_bytes("RGB", seed=1),
    }
    segments = {}
    for item, data in files.items():
        got = c.post(
            f"/v1/collections/{name}/items", files={"file": ("f", data)}, data={"id": item}
        )
        assert got.status_code == 201, got.text
        segments[item] = got.json().get("segments") or 1
    assert segments["long1"] > 1 and segments["half"] > 1 and segments["cut"] == 1, segments
    pairs = listing(c, name, threshold=1e-6)
    found = {frozenset((p["a"], p["b"])) for p in pairs}
    assert frozenset(("long1", "long2")) in found
    assert frozenset(("cut", "cut2")) in found
    mixed = {frozenset(p) for p in itertools.product(["long1", "long2", "half"], ["cut", "cut2"])}
    assert not found & mixed, "a whole clip never pairs with a one-segment item"
    assert not {pair for pair in found if "half" in pair}, "durations 6 s and 12 s disagree"
    assert not {pair for pair in found if "picture" in pair}
