"""Inputs that used to cost the server too much or answer 500 (issue 19, items 4, 5, 9, 10):
bounded filters and a time limit on every SQL statement, non-finite and deeply nested
metadata, numbers beyond 64 bits, a lost original, vectors at the edges of float range,
the identifier rule, and job bodies."""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from app.main import create_app
from app.schemas.jobs import MAX_JOB_PAIRS
from app.schemas.search import MAX_FILTER_KEYS, MAX_FILTER_VALUES
from app.settings import Settings
from index.db import make_engine, migrate, no_time_limit, statement_timed_out
from tests.app.test_never_500 import FUZZ
from tests.conftest import error_code
from tests.factories import image_bytes, services_of

NAME = "things"
# A statement that runs for minutes unless stopped (SQLite: a recursive count; Postgres: a
# sleep); each backend gets the one it can run.
SLOW_SQL = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM (SELECT x FROM c LIMIT 10000000000)",
    "postgresql": "SELECT pg_sleep(60)",
}


def add(client: TestClient, item_id: str, **fields: Any) -> Any:
    return client.post(
        f"/v1/collections/{NAME}/items", json={"text": item_id, "id": item_id, **fields}
    )


@pytest.fixture
def seeded(client: TestClient, collection: str) -> TestClient:
    for i in range(3):
        assert add(client, f"i{i}", metadata={"group": i % 2, "tag": "x"}).status_code == 201
    return client


# -- item 4: filters are bounded, statements are timed -----------------------------------


@pytest.mark.parametrize(
    ("filter_", "limit"),
    [
        ({f"k{i}": 1 for i in range(MAX_FILTER_KEYS + 1)}, f"limit is {MAX_FILTER_KEYS}"),
        ({"k": list(range(MAX_FILTER_VALUES + 1))}, f"limit is {MAX_FILTER_VALUES}"),
        ({"k": list(range(70_000))}, f"limit is {MAX_FILTER_VALUES}"),
        ({f"k{i}": list(range(900)) for i in range(5)}, "limit is 4000"),
        ({"k": "v" * 1025}, "over 1024 characters"),
        ({"k\u202e": 1}, "bidi"),
    ],
)
def test_filters_over_a_bound_are_422_naming_it(
    seeded: TestClient, filter_: dict[str, Any], limit: str
) -> None:
    for query in ({"text": "x"}, {"vector": [1.0] * 64}):
        r = seeded.post(f"/v1/collections/{NAME}/search", json={**query, "filter": filter_})
        assert r.status_code == 422 and error_code(r) == "validation_error", r.text
        assert limit in r.json()["error"]["message"]
    form = {"filter": json.dumps(filter_)}
    r = seeded.post(f"/v1/collections/{NAME}/search", files={"file": ("q", b"x")}, data=form)
    assert r.status_code == 422 and limit in r.json()["error"]["message"], r.text


def test_filters_at_the_bounds_answer_quickly(seeded: TestClient) -> None:
    widest = {f"k{i}": list(range(100)) for i in range(MAX_FILTER_KEYS - 1)}
    widest["group"] = [1]
    started = time.monotonic()
    r = seeded.post(f"/v1/collections/{NAME}/search", json={"text": "x", "filter": widest})
    assert r.status_code == 200 and r.json()["results"] == []
    r = seeded.post(
        f"/v1/collections/{NAME}/search",
        json={"text": "x", "k": 5, "filter": {"group": [1, *range(2, MAX_FILTER_VALUES)]}},
    )
    assert [h["item"]["id"] for h in r.json()["results"]] == ["i1"]
    assert time.monotonic() - started < 5


@pytest.fixture
def dialect(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def test_a_statement_past_the_limit_is_stopped(database_url: str, dialect: str) -> None:
    engine = make_engine(database_url, statement_timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as caught, engine.connect() as conn:
            conn.execute(text(SLOW_SQL[dialect]))
        assert statement_timed_out(caught.value), caught.value
        assert time.monotonic() - started < 5
        with engine.connect() as conn:  # the connection is usable again
            assert conn.execute(text("SELECT 1")).scalar() == 1
        # Work that grows with the data runs unlimited; migrations do.
        quick = {"sqlite": SLOW_SQL["sqlite"].replace("10000000000", "3000000")}
        with engine.begin() as conn, no_time_limit(conn):
            conn.execute(text(quick.get(dialect, "SELECT pg_sleep(0.5)")))
        hurried = make_engine(database_url, statement_timeout_s=0.001)
        try:
            migrate(hurried)
        finally:
            hurried.dispose()
    finally:
        engine.dispose()


def test_a_request_whose_statement_times_out_is_503_not_500(
    make_settings: Callable[..., Settings], dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(make_settings(sql_timeout_s=0.3))) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        assert add(client, "a", metadata={"k": 1}).status_code == 201
        services = services_of(client)

        def slow(**_: Any) -> Any:
            with services.engine.connect() as conn:
                conn.execute(text(SLOW_SQL[dialect]))

        monkeypatch.setattr(services.stores.items, "matching_pks", slow)
        r = client.post(f"/v1/collections/{NAME}/search", json={"text": "a", "filter": {"k": 1}})
        assert r.status_code == 503 and error_code(r) == "query_timeout", r.text
        assert "Retry-After" in r.headers and "MMR_SQL_TIMEOUT_S" in r.text


# -- item 5: what still answered 500 -----------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_metadata_is_422_everywhere_and_stores_nothing(
    client: TestClient, collection: str, value: str
) -> None:
    assert add(client, "kept", metadata={"n": 1}).status_code == 201
    meta = f'{{"n": {value}, "deep": [1, {{"x": {value}}}]}}'
    json_body = {"content-type": "application/json"}
    answers = [
        client.post(
            f"/v1/collections/{NAME}/items",
            content=f'{{"text": "x", "id": "new", "metadata": {meta}}}',
            headers=json_body,
        ),
        client.patch(
            f"/v1/collections/{NAME}/items/kept",
            content=f'{{"metadata": {meta}}}',
            headers=json_body,
        ),
        client.post(
            f"/v1/collections/{NAME}/items", files={"file": ("f", b"x")}, data={"metadata": meta}
        ),
    ]
    for r in answers:
        assert r.status_code == 422 and error_code(r) == "validation_error", r.text
        assert "finite" in r.json()["error"]["message"]
    batch = client.post(
        f"/v1/collections/{NAME}/items/batch",
        content=f'[{{"text": "x", "id": "new", "metadata": {meta}}}]',
        headers=json_body,
    )
    assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 422
    assert client.get(f"/v1/collections/{NAME}/items/new").status_code == 404
    assert client.get(f"/v1/collections/{NAME}/items/kept").json()["metadata"] == {"n": 1}


@pytest.mark.parametrize(
    "lone",
    ['{"k": "\\ud800"}', '{"\\udfff": 1}', '{"k": ["ok", {"x": "a\\udc80b"}]}'],
    ids=["value", "key", "deep"],
)
def test_a_lone_surrogate_in_json_of_a_form_field_is_400_and_stores_nothing(
    client: TestClient, collection: str, lone: str
) -> None:
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``); Python's parser gives a string
    no UTF-8 can hold: stored, it made every later listing of the collection a 500. JSON
    bodies are refused by their parser; the form's JSON fields are refused alike."""
    png = image_bytes("RGB", fmt="PNG")
    file = {"file": ("a.png", png, "image/png")}
    answers = [
        client.post(f"/v1/collections/{NAME}/items", files=file, data={"metadata": lone}),
        client.post(
            f"/v1/collections/{NAME}/items/batch",
            files=[("file", ("a.png", png, "image/png"))],
            data={"metadata": f"[{lone}]"},
        ),
        client.post(f"/v1/collections/{NAME}/search", files=file, data={"filter": lone}),
        client.post(
            f"/v1/collections/{NAME}/items/batch",
            content=f'[{{"text": "x", "id": "new", "metadata": {lone}}}]'.encode(),
            headers={"content-type": "application/json"},
        ),
    ]
    for r in answers:
        assert r.status_code == 400 and error_code(r) == "malformed_json", r.text
        assert "surrogate" in r.json()["error"]["message"]
    listed = client.get(f"/v1/collections/{NAME}/items")
    assert listed.status_code == 200 and listed.json()["items"] == []
    # A proper pair (an emoji escaped as two halves) is one character, and welcome.
    ok = client.post(
        f"/v1/collections/{NAME}/items", files=file, data={"metadata": '{"k": "\\ud83d\\ude00"}'}
    )
    assert ok.status_code == 201 and ok.json()["metadata"] == {"k": "\U0001f600"}


def test_a_bad_entry_of_a_multipart_batch_metadata_list_sinks_only_itself(
    client: TestClient, collection: str
) -> None:
    # One metadata object per file: a bad one is that file's error, in place (API.md: one
    # bad item does not sink the others), as in a JSON batch.
    files = [
        ("file", (f"f{i}.png", image_bytes("RGB", fmt="PNG", seed=i), "image/png"))
        for i in range(3)
    ]
    meta = '[{"n": 1}, {"n": NaN}, "not an object"]'
    r = client.post(f"/v1/collections/{NAME}/items/batch", files=files, data={"metadata": meta})
    assert r.status_code == 200, r.text
    assert [e["status"] for e in r.json()["results"]] == [201, 422, 422]
    assert r.json()["results"][0]["item"]["metadata"] == {"n": 1}


def nested(depth: int, inner: str = "1") -> str:
    return '{"a": ' * depth + inner + "}" * depth


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5000), array=st.booleans())
def test_nesting_of_any_depth_is_refused_cleanly(
    client: TestClient, depth: int, array: bool
) -> None:
    """Metadata nests 32 levels; deeper is 422, too deep to parse 400, never a 500."""
    if client.get(f"/v1/collections/{NAME}").status_code == 404:
        client.post("/v1/collections", json={"name": NAME})
        add(client, "seed")
    value = "[" * depth + "]" * depth if array else nested(depth)
    json_body = {"content-type": "application/json"}
    answers = [
        client.post(
            f"/v1/collections/{NAME}/items",
            content=f'{{"text": "x", "metadata": {{"v": {value}}}}}',
            headers=json_body,
        ),
        client.post(
            f"/v1/collections/{NAME}/items/batch",
            content=f'[{{"text": "x", "metadata": {{"v": {value}}}}}]',
            headers=json_body,
        ),
        client.patch(
            f"/v1/collections/{NAME}/items/seed",
            content=f'{{"metadata": {{"v": {value}}}}}',
            headers=json_body,
        ),
        client.post(
            f"/v1/collections/{NAME}/items",
            files={"file": ("f", b"x")},
            data={"metadata": f'{{"v": {value}}}'},
        ),
        client.post(
            f"/v1/collections/{NAME}/search",
            content=f'{{"vector": [1], "filter": {{"v": {value}}}}}',
            headers=json_body,
        ),
        client.post(
            f"/v1/collections/{NAME}/search",
            files={"file": ("f", b"x")},
            data={"filter": f'{{"v": {value}}}'},
        ),
    ]
    for r in answers:
        assert r.status_code < 500, (r.status_code, r.text)
        if r.status_code >= 400:
            error_code(r)
    first = answers[0]
    if depth + 2 <= 32:
        assert first.status_code == 201, first.text
    else:
        assert first.status_code in (400, 422), first.text


@FUZZ
@given(number=st.integers(min_value=-(2**200), max_value=2**200))
def test_numbers_of_any_size_in_paths_and_cursors(client: TestClient, number: int) -> None:
    if client.get(f"/v1/collections/{NAME}").status_code == 404:
        client.post("/v1/collections", json={"name": NAME})
    r = client.post(f"/v1/collections/{NAME}/aligners/{number}/activate")
    assert r.status_code in ((200,) if number == 1 else (404, 422)), r.text
    forged = base64.urlsafe_b64encode(json.dumps({"after": number}).encode()).decode()
    r = client.get(f"/v1/collections/{NAME}/items", params={"cursor": forged.rstrip("=")})
    assert r.status_code == (200 if 0 <= number < 2**63 else 400), r.text


def test_a_lost_original_is_404_saying_so(client: TestClient, collection: str) -> None:
    """A file's original gone from the data directory (a text's is its row, never lost so)."""
    files = {"file": ("a.png", image_bytes("RGB", fmt="PNG"), "image/png")}
    item = client.post(f"/v1/collections/{NAME}/items", files=files, data={"id": "a"}).json()
    blobs: Path = services_of(client).blobs.path(item["sha256"])
    blobs.unlink()
    r = client.get(f"/v1/collections/{NAME}/items/a/content")
    assert r.status_code == 404 and "missing" in r.json()["error"]["message"]
    assert client.get(f"/v1/collections/{NAME}/items/a").status_code == 200


@FUZZ
@given(
    exponent=st.integers(min_value=-330, max_value=330),
    signs=st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=64, max_size=64),
)
def test_vectors_of_any_magnitude_search_or_are_refused(
    client: TestClient, exponent: int, signs: list[float]
) -> None:
    """Normalising 1e-30 or 1e30 in float32 gave zeros or NaN scores; any finite vector
    with a direction searches, the rest is 422."""
    if client.get(f"/v1/collections/{NAME}").status_code == 404:
        client.post("/v1/collections", json={"name": NAME})
        add(client, "seed")
    scale = float(f"1e{exponent}")
    vector = [s * scale for s in signs]
    body = json.dumps({"vector": vector}).replace("Infinity", "1e400")
    r = client.post(
        f"/v1/collections/{NAME}/search",
        content=body,
        headers={"content-type": "application/json"},
    )
    if not any(vector) or not np.isfinite(scale):
        assert r.status_code == 422 and error_code(r) == "validation_error", r.text
        return
    assert r.status_code == 200, r.text
    [hit] = r.json()["results"]
    assert -1.001 <= hit["score"] <= 1.001
    same = client.post(f"/v1/collections/{NAME}/search", json={"vector": signs}).json()
    assert hit["score"] == pytest.approx(same["results"][0]["score"], abs=1e-5)


# -- item 9: identifiers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        ".",
        "..",
        "a/b",
        "",
        " a",
        "a ",
        "a\u202eb",
        "a\u2066b",
        "\u200b",
        "a\u2028b",
        "a\x85b",
        "x" * 256,
    ],
)
def test_ids_that_hide_or_look_alike_are_refused(
    client: TestClient, collection: str, bad: str
) -> None:
    r = add(client, bad)
    assert r.status_code == 422 and error_code(r) == "validation_error", r.text
    r = client.post(f"/v1/collections/{NAME}/items", files={"file": ("f", b"x")}, data={"id": bad})
    assert r.status_code == 422, r.text
    job = {"type": "finetune", "collection": NAME, "pairs": [["ok", bad]]}
    assert client.post("/v1/jobs", json=job).status_code == 422
    assert client.get(f"/v1/collections/{NAME}/items").json()["items"] == []


@pytest.mark.parametrize(
    ("bad", "said"), [("a\u202eb", "U+202E"), ("..", "nor be"), (" a", "whitespace")]
)
def test_a_form_id_is_refused_saying_why(
    client: TestClient, collection: str, bad: str, said: str
) -> None:
    # A multipart id's 422 names what is wrong with it, as the JSON field's does.
    r = client.post(f"/v1/collections/{NAME}/items", files={"file": ("f", b"x")}, data={"id": bad})
    assert r.status_code == 422 and said in r.json()["error"]["message"], r.text


def test_nfc_and_nfd_name_one_item(client: TestClient, collection: str) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert add(client, nfd).status_code == 201
    again = add(client, nfc)
    assert again.status_code == 200 and again.json()["id"] == nfc
    for spelling in (nfc, nfd):
        assert client.get(f"/v1/collections/{NAME}/items/{spelling}").json()["id"] == nfc
    hit = client.post(f"/v1/collections/{NAME}/search", json={"item_id": nfd, "k": 1}).json()
    assert hit["results"][0]["item"]["id"] == nfc
    assert len(client.get(f"/v1/collections/{NAME}/items").json()["items"]) == 1


def test_filter_keys_that_are_one_in_nfc_are_refused(client: TestClient, collection: str) -> None:
    # Two spellings of one key would keep only the last condition: refused, as in metadata.
    assert add(client, "a", metadata={"caf\u00e9": 2}).status_code == 201
    wanted = {"cafe\u0301": 1, "caf\u00e9": 2}
    r = client.post(f"/v1/collections/{NAME}/search", json={"text": "a", "filter": wanted})
    assert r.status_code == 422 and error_code(r) == "validation_error", r.text
    assert "NFC" in r.json()["error"]["message"]


def test_metadata_keys_follow_the_rule(client: TestClient, collection: str) -> None:
    r = add(client, "a", metadata={"cafe\u0301": 1, "album": "x"})
    assert r.json()["metadata"] == {"caf\u00e9": 1, "album": "x"}
    hits = client.post(
        f"/v1/collections/{NAME}/search", json={"text": "a", "filter": {"cafe\u0301": 1}}
    ).json()["results"]
    assert [h["item"]["id"] for h in hits] == ["a"]
    for bad in ({"a\u202e": 1}, {"x": {"\u2067": 1}}, {"cafe\u0301": 1, "caf\u00e9": 2}):
        r = add(client, "b", metadata=bad)
        assert r.status_code == 422 and error_code(r) == "validation_error", r.text


@FUZZ
@given(raw=st.text(min_size=1, max_size=40))
def test_any_accepted_id_is_stored_in_nfc_without_hidden_characters(
    client: TestClient, raw: str
) -> None:
    if client.get(f"/v1/collections/{NAME}").status_code == 404:
        client.post("/v1/collections", json={"name": NAME})
    r = add(client, raw)
    assert r.status_code in (200, 201, 422), r.text
    if r.status_code == 422:
        return
    stored = r.json()["id"]
    assert stored == unicodedata.normalize("NFC", raw) and stored not in (".", "..")
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp") for c in stored)
    assert stored == stored.strip() and "/" not in stored


# -- item 10: job bodies --------------------------------------------------------------


@pytest.fixture
def idle(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A server whose jobs wait: no worker, small queue caps."""
    settings = make_settings(worker="off", max_queued_jobs=5, max_queued_jobs_per_collection=3)
    with TestClient(create_app(settings)) as c:
        yield c


def test_pairs_are_capped_and_listed_as_a_count(idle: TestClient) -> None:
    assert idle.post("/v1/collections", json={"name": NAME}).status_code == 201
    too_many = [["a", "b"]] * (MAX_JOB_PAIRS + 1)
    r = idle.post("/v1/jobs", json={"type": "finetune", "collection": NAME, "pairs": too_many})
    assert r.status_code == 422 and str(MAX_JOB_PAIRS) in r.json()["error"]["message"]
    too_long = [["a" * 255, "b" * 255]] * 4000
    r = idle.post("/v1/jobs", json={"type": "finetune", "collection": NAME, "pairs": too_long})
    assert r.status_code == 422 and "2,000,000" in r.json()["error"]["message"], r.text
    pairs = [[f"a{i}", f"b{i}"] for i in range(500)]
    r = idle.post("/v1/jobs", json={"type": "finetune", "collection": NAME, "pairs": pairs})
    assert r.status_code == 202
    for shown in (r.json(), idle.get(f"/v1/jobs/{r.json()['id']}").json()):
        assert "pairs" not in shown["params"] and shown["params"]["pairs_count"] == 500
    listed = idle.get("/v1/jobs").json()["jobs"][0]["params"]
    assert "pairs" not in listed and listed["pairs_count"] == 500
    assert len(idle.get("/v1/jobs").content) < 2000
    # The worker still has them all; once the job ends, SQL keeps only their count.
    jobs = services_of(idle).stores.jobs
    assert len(jobs.get(r.json()["id"]).params["pairs"]) == 500
    assert idle.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 200
    r = idle.post("/v1/jobs", json={"type": "finetune", "collection": NAME, "pairs": pairs})
    running = jobs.claim(worker="w", lease_s=30)
    assert running is not None and running.id == r.json()["id"]
    assert jobs.finish(running.id, worker="w", status="failed", error="test")
    for ended in idle.get("/v1/jobs").json()["jobs"]:
        assert jobs.get(ended["id"]).params["pairs_count"] == 500
        assert "pairs" not in jobs.get(ended["id"]).params


def test_queued_jobs_are_capped_per_collection_and_in_all(idle: TestClient) -> None:
    def queue(name: str) -> Any:
        return idle.post("/v1/jobs", json={"type": "reindex", "collection": name})

    for name in (NAME, "other"):
        assert idle.post("/v1/collections", json={"name": name}).status_code == 201
    assert [queue(NAME).status_code for _ in range(3)] == [202] * 3
    r = queue(NAME)
    assert r.status_code == 429 and error_code(r) == "overloaded"
    assert "MMR_MAX_QUEUED_JOBS_PER_COLLECTION" in r.text and "Retry-After" in r.headers
    assert [queue("other").status_code for _ in range(2)] == [202] * 2
    r = queue("other")
    assert r.status_code == 429 and "(MMR_MAX_QUEUED_JOBS)" in r.text
    assert not any(c.isdigit() for c in r.json()["error"]["message"])  # nothing to count by
    # A cancelled job frees its place.
    first = idle.get("/v1/jobs", params={"collection": "other"}).json()["jobs"][0]["id"]
    assert idle.post(f"/v1/jobs/{first}/cancel").status_code == 200
    assert queue("other").status_code == 202
