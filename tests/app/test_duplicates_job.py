"""The `duplicates` job on SQLite and Postgres: a collection past MMR_DUPLICATES_EXACT_MAX
(lowered here to 3 items) is refused by the route with the job to post; the job computes
the exact listing in the background and stores it; the route then pages it, says where it
comes from and whether the collection changed since, and leaves out deleted items; cancel,
bad parameters and a deleted collection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.main import create_app
from app.services import duplicates_job
from app.settings import Settings
from index.pairs import Pairs
from index.tables import DuplicateListingRow
from tests.app.test_duplicates import assert_all_pairs, fill, listing, url
from tests.app.test_jobs import wait
from tests.conftest import error_code
from tests.factories import image_bytes, services_of

TEXTS = ["a dog", "a cat", "a dog", "the sea", "a dog", "a cat", "a red circle", "the sea"]


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(duplicates_exact_max=3, job_poll_s=0.1)
    with TestClient(create_app(settings)) as c:
        yield c


def run(client: TestClient, name: str, **body: Any) -> dict[str, Any]:
    """Post a duplicates job and wait for it to end."""
    response = client.post("/v1/jobs", json={"type": "duplicates", "collection": name, **body})
    assert response.status_code == 202, response.text
    return wait(client, response.json()["id"])


def pages(client: TestClient, name: str, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    """Every pair, and the `stored` of the first page."""
    first = client.get(url(name), params=params)
    assert first.status_code == 200, first.text
    return listing(client, name, **params), first.json()["stored"]


def posted_job(response: Any) -> dict[str, Any]:
    """The job body a 422 tells the client to post."""
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    message: str = response.json()["error"]["message"]
    start = message.index("POST /v1/jobs ") + len("POST /v1/jobs ")
    body, _ = json.JSONDecoder().raw_decode(message[start:])
    assert isinstance(body, dict)
    return body


def test_the_job_lists_what_the_exact_route_lists_and_the_route_pages_it(
    client: TestClient, make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    name = fill(client, TEXTS)
    body = posted_job(client.get(url(name), params={"threshold": 0.98}))
    assert body == {"type": "duplicates", "collection": name, "threshold": 0.98}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["fraction"] == 1.0
    assert job["metrics"]["items"] == len(TEXTS)
    pairs, stored = pages(client, name, threshold=0.98, limit=2)
    assert_all_pairs(client, name, pairs, 0.98)
    assert job["metrics"]["pairs"] == len(pairs) == 5  # 3 dogs, 2 cats, 2 seas
    assert stored["job_id"] == job["id"] and stored["stale"] is False
    assert stored["threshold"] == 0.98 and stored["modality"] is None
    assert job["metrics"]["threshold"] == 0.98
    # The exact listing a server with a larger bound computes within the request.
    big = make_settings(duplicates_exact_max=20_000, data_dir=tmp_path / "big", worker="off")
    with TestClient(create_app(big)) as other:
        assert listing(other, name, threshold=0.98, limit=3) == pairs
        assert other.get(url(name)).json()["stored"] is None


def test_a_listing_answers_higher_thresholds_and_its_modality_only(client: TestClient) -> None:
    name = fill(client, TEXTS)
    job = run(client, name, threshold=0.5)
    assert job["status"] == "succeeded", job
    high, _ = pages(client, name, threshold=0.999)
    assert_all_pairs(client, name, high, 0.999)
    low, _ = pages(client, name, threshold=0.5)
    assert_all_pairs(client, name, low, 0.5)
    assert len(low) >= len(high)
    below = posted_job(client.get(url(name), params={"threshold": 0.4}))
    assert below["threshold"] == 0.4
    texts, stored = pages(client, name, threshold=0.5, modality="text")
    assert texts == low and stored["modality"] is None  # all modalities cover each
    for n, seed in enumerate([1, 2, 1, 3]):  # more images than the route lists itself
        picture = {"file": ("p.png", image_bytes("RGB", fmt="PNG", seed=seed))}
        made = client.post(f"/v1/collections/{name}/items", files=picture, data={"id": f"p{n}"})
        assert made.is_success
    only = run(client, name, threshold=0.5, modality="image")
    assert only["status"] == "succeeded" and only["metrics"]["items"] == 4
    # A listing of images answers for images, never for every modality.
    images, stored = pages(client, name, modality="image")
    assert stored["job_id"] == only["id"] and stored["stale"] is False
    assert ("p0", "p2") in {(p["a"], p["b"]) for p in images}
    assert all(p["a"][0] == p["b"][0] == "p" for p in images)
    assert pages(client, name)[1]["job_id"] == job["id"]


def test_deleted_items_drop_out_and_a_write_makes_it_stale(client: TestClient) -> None:
    name = fill(client, TEXTS)
    assert run(client, name)["status"] == "succeeded"
    before, stored = pages(client, name, limit=1)
    assert stored["stale"] is False and ("i0", "i2") in {(p["a"], p["b"]) for p in before}
    assert client.delete(f"/v1/collections/{name}/items/i0").status_code == 204
    after, stored = pages(client, name, limit=1)
    assert stored["stale"] is True
    assert after == [p for p in before if "i0" not in (p["a"], p["b"])]
    body = {"id": "i99", "text": "a dog"}
    assert client.post(f"/v1/collections/{name}/items", json=body).status_code == 201
    assert pages(client, name)[1]["stale"] is True
    again = run(client, name)
    assert pages(client, name)[1] | {"computed_at": None} == {
        "job_id": again["id"],
        "computed_at": None,
        "threshold": 0.98,
        "modality": None,
        "change_seq": again["metrics"]["change_seq"],
        "stale": False,
    }
    assert ("i2", "i99") in {(p["a"], p["b"]) for p in listing(client, name)}


def test_a_cancelled_job_stores_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def endless(matrix: np.ndarray, floor: float, *, cap: int, between: Any) -> Pairs:
        while True:  # a block of work after another, until the cancel lands
            between(1, 10**9)
            time.sleep(0.01)

    monkeypatch.setattr(duplicates_job, "range_pairs", endless)
    name = fill(client, TEXTS)
    response = client.post("/v1/jobs", json={"type": "duplicates", "collection": name})
    job_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["progress"].get("phase") != "comparing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert 0.1 <= progress["fraction"] < 1 and "eta_s" in progress
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    monkeypatch.undo()
    # The worker stops within a block and takes the next job.
    assert run(client, name, threshold=0.99)["status"] == "succeeded"
    assert wait(client, job_id)["status"] == "cancelled"
    assert pages(client, name, threshold=0.99)[1]["threshold"] == 0.99
    posted_job(client.get(url(name), params={"threshold": 0.98}))


def test_more_pairs_than_a_listing_holds_fail_the_job_saying_what_to_do(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duplicates_job, "MAX_PAIRS", 2)
    name = fill(client, TEXTS)
    job = run(client, name)
    assert job["status"] == "failed"
    assert "higher threshold" in job["error"]
    posted_job(client.get(url(name)))


@pytest.mark.parametrize(
    "extra",
    [
        {"threshold": 0},
        {"threshold": 1.5},
        {"threshold": -0.2},
        {"threshold": "high"},
        {"threshold": True},
        {"modality": "smell"},
        {"modality": 3},
        {"limit": 10},
    ],
)
def test_bad_parameters_are_refused_and_nothing_is_queued(
    client: TestClient, extra: dict[str, Any]
) -> None:
    name = fill(client, ["a dog"])
    body = {"type": "duplicates", "collection": name, **extra}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_an_unknown_collection_is_404(client: TestClient) -> None:
    response = client.post("/v1/jobs", json={"type": "duplicates", "collection": "absent"})
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_a_deleted_collection_takes_its_listings_along(client: TestClient) -> None:
    name = fill(client, TEXTS)
    assert run(client, name)["status"] == "succeeded"
    services = services_of(client)
    row = services.stores.collections.get(name)

    def held() -> int:
        stmt = select(func.count()).where(DuplicateListingRow.collection_id == row.id)
        with services.stores.sessions() as session:
            return int(session.scalar(stmt) or 0)

    assert held() == 1
    assert client.delete(f"/v1/collections/{name}").status_code == 204
    assert held() == 0
    fill_again = client.post("/v1/collections", json={"name": name})
    assert fill_again.status_code == 201
    response = client.get(url(name))
    assert response.status_code == 200 and response.json()["stored"] is None


def test_posting_the_job_needs_write(make_settings: Callable[..., Settings]) -> None:
    root = {"Authorization": "Bearer root"}
    settings = make_settings(api_keys="root", worker="off", duplicates_exact_max=3)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/collections", json={"name": "mine"}, headers=root).status_code == 201
        body = {"type": "duplicates", "collection": "mine"}
        for scope, status in (("read", 403), ("write", 202)):
            made = c.post("/v1/keys", json={"name": scope, "scope": scope}, headers=root).json()
            key = {"Authorization": f"Bearer {made['key']}"}
            assert c.post("/v1/jobs", json=body, headers=key).status_code == status
