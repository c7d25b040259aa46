"""Composed queries (a weighted sum of parts), pages (offset) and a score floor (min_score):
the v1.1 search fields, through the route and the fast path alike."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.test_search import add_texts, ids, search
from tests.conftest import error_code
from tests.factories import image_bytes

WORDS = ["red kite", "blue boat", "green field", "yellow sun", "black cat", "white snow"]


@pytest.fixture
def filled(client: TestClient, collection: str) -> str:
    add_texts(
        client,
        collection,
        {f"t{i}": (f"a photo of a {w} number {i}", {}) for i, w in enumerate(WORDS * 3)},
    )
    return collection


def scored(result: dict) -> list[tuple[str, float]]:  # type: ignore[type-arg]
    return [(hit["item"]["id"], hit["score"]) for hit in result["results"]]


def assert_same(a: dict, b: dict, tol: float = 1e-4) -> None:  # type: ignore[type-arg]
    """The same scores, rank by rank, and the same item at each rank but where two items
    score alike (within ``tol``): float sums in another order may swap such a tie, or
    bring the other of two tied items in at the cut."""
    sa, sb = scored(a), scored(b)
    assert len(sa) == len(sb)
    for (_, x), (_, y) in zip(sa, sb, strict=True):
        assert x == pytest.approx(y, abs=tol)
    in_a, in_b = dict(sa), dict(sb)
    for (ia, x), (ib, _) in zip(sa, sb, strict=True):
        if ia == ib:
            continue
        last = sa[-1][1]
        assert in_a.get(ib, last) == pytest.approx(x, abs=tol), (ia, ib, sa, sb)
        assert in_b.get(ia, last) == pytest.approx(x, abs=tol), (ia, ib, sa, sb)


def dim_of(client: TestClient, name: str) -> int:
    return int(client.get(f"/v1/collections/{name}").json()["dim"])


def test_one_part_searches_as_the_plain_query(client: TestClient, filled: str) -> None:
    text = "a photo of a black cat"
    assert_same(
        search(client, filled, query=[{"text": text}], k=8), search(client, filled, text=text, k=8)
    )
    assert_same(
        search(client, filled, query=[{"item_id": "t3", "weight": 2.5}], k=8),
        search(client, filled, item_id="t3", k=8),
    )
    assert search(client, filled, query=[{"text": text}])["query_modality"] == "composed"


def test_parts_add_up_by_their_weights(client: TestClient, filled: str) -> None:
    rng = np.random.default_rng(0)
    dim = dim_of(client, filled)
    a, b = rng.normal(size=dim), rng.normal(size=dim)
    composed = search(
        client,
        filled,
        query=[{"vector": a.tolist(), "weight": 1.0}, {"vector": (3 * b).tolist(), "weight": -0.5}],
        k=10,
    )
    manual = a / np.linalg.norm(a) - 0.5 * b / np.linalg.norm(b)
    assert_same(composed, search(client, filled, vector=manual.tolist(), k=10))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.floats(-5, 5, allow_subnormal=False).filter(lambda w: abs(w) > 0.05),
    st.floats(-5, 5, allow_subnormal=False),
)
def test_any_weights_compose_as_the_weighted_sum(
    client: TestClient, filled: str, w1: float, w2: float
) -> None:
    dim = dim_of(client, filled)
    a = np.linspace(-1, 1, dim)
    b = np.cos(np.arange(dim))
    manual = w1 * a / np.linalg.norm(a) + w2 * b / np.linalg.norm(b)
    if np.linalg.norm(manual) < 1e-3:
        return
    composed = search(
        client,
        filled,
        query=[{"vector": a.tolist(), "weight": w1}, {"vector": b.tolist(), "weight": w2}],
    )
    assert_same(composed, search(client, filled, vector=manual.tolist()))


def test_parts_that_cancel_out_are_refused(client: TestClient, filled: str) -> None:
    response = client.post(
        f"/v1/collections/{filled}/search",
        json={"query": [{"text": "a cat"}, {"text": "a cat", "weight": -1}]},
    )
    assert response.status_code == 422 and error_code(response) == "validation_error"
    assert "cancel out" in response.json()["error"]["message"]


def test_a_file_part_searches_as_the_file(client: TestClient, collection: str) -> None:
    for seed in range(3):
        client.post(
            f"/v1/collections/{collection}/items",
            files={"file": ("i", image_bytes("RGB", seed=seed))},
            data={"id": f"img{seed}"},
        )
    data = image_bytes("RGB", seed=1)
    as_file = client.post(f"/v1/collections/{collection}/search", files={"file": ("q", data)})
    as_part = search(client, collection, query=[{"data": base64.b64encode(data).decode()}])
    assert_same(as_part, as_file.json())
    assert ids(as_part)[0] == "img1"


@pytest.mark.parametrize(
    "body",
    [
        {"query": []},
        {"query": [{"text": "a", "item_id": "t1"}]},
        {"query": [{"weight": 1}]},
        {"query": [{"text": "a"}], "text": "b"},
        {"query": [{"text": "a", "weight": float("1e7")}]},
        {"query": [{"text": "a"}] * 17},
        {"text": "a", "offset": -1},
        {"text": "a", "min_score": 1.5},
    ],
)
def test_a_malformed_query_is_refused(client: TestClient, filled: str, body: dict) -> None:  # type: ignore[type-arg]
    response = client.post(f"/v1/collections/{filled}/search", json=body)
    assert response.status_code == 422 and error_code(response) == "validation_error", response.text


def test_a_part_that_is_not_base64_says_so(client: TestClient, filled: str) -> None:
    response = client.post(
        f"/v1/collections/{filled}/search", json={"query": [{"data": "not base64!"}]}
    )
    assert response.status_code == 422 and "base64" in response.json()["error"]["message"]


def test_pages_come_from_one_ranking(client: TestClient, filled: str) -> None:
    whole = search(client, filled, text="a photo of a yellow sun", k=12)
    for offset in (0, 3, 9):
        page = search(client, filled, text="a photo of a yellow sun", k=3, offset=offset)
        assert ids(page) == ids(whole)[offset : offset + 3]
    past = search(client, filled, text="a photo of a yellow sun", k=5, offset=100)
    assert past["results"] == []
    # Results go 1000 deep: a page reaching past that is cut there, not refused.
    deep = search(client, filled, text="a photo of a yellow sun", k=995, offset=10)
    assert ids(deep) == ids(search(client, filled, text="a photo of a yellow sun", k=18))[10:]


def test_no_result_below_the_floor(client: TestClient, filled: str) -> None:
    whole = search(client, filled, text="a photo of a white snow", k=18)
    floor = whole["results"][6]["score"]
    kept = search(client, filled, text="a photo of a white snow", k=18, min_score=floor)
    assert scored(kept) == [(i, s) for i, s in scored(whole) if s >= floor]
    assert all(hit["score"] >= floor for hit in kept["results"])


def test_the_form_takes_text_offset_and_min_score(client: TestClient, filled: str) -> None:
    url = f"/v1/collections/{filled}/search"
    json_page = search(client, filled, text="a blue boat", k=4, offset=2, min_score=-1.0)
    fields = {"text": "a blue boat", "k": "4", "offset": "2", "min_score": "-1"}
    # multipart/form-data with text fields only (httpx's (None, value) parts)
    form_page = client.post(url, files={k: (None, v) for k, v in fields.items()})
    assert form_page.status_code == 200, form_page.text
    assert_same(form_page.json(), json_page)
    picture = image_bytes("RGB", seed=0)
    both = client.post(url, data={"text": "a blue boat"}, files={"file": ("q", picture)})
    assert both.status_code == 200, both.text  # searched together: a query of two parts
    assert both.json()["query_modality"] == "composed"
    together = search(
        client,
        filled,
        query=[{"data": base64.b64encode(picture).decode()}, {"text": "a blue boat"}],
    )
    assert_same(both.json(), together)
    blank = client.post(url, files={"text": (None, ""), "k": (None, "3")})
    assert blank.status_code == 422 and error_code(blank) == "validation_error"
