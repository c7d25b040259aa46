"""Lexical and hybrid search (``mode``): the full-text index in SQL finds exact tokens,
follows every write, is shared by every process over the database and survives a restart;
hybrid blends the cosine and the lexical score with a documented weight."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.schemas.common import MAX_TEXT_CHARS
from app.schemas.search import MAX_LEXICAL_WEIGHT
from app.services import search as search_service
from app.settings import Settings
from index import items as items_module
from tests.app.test_crash import serve, server_env
from tests.app.test_search import add_texts, ids, search
from tests.conftest import error_code

CATALOGUE = {
    "p1": ("XJ-9000 charger for the travel kit", {"sku": "QZ-118", "year": 1987}),
    "p2": ("XJ-9001 charger for the travel kit", {"sku": "QZ-119", "year": 1990}),
    "p3": ("a blue umbrella with a wooden handle", {"sku": "UM-1"}),
    "p4": ("Café crème served in the morning", {"maker": "Zorblax Ltd"}),
    "p5": ("travel kit with two chargers", {}),
}


@pytest.fixture
def shop(client: TestClient, collection: str) -> str:
    add_texts(client, collection, CATALOGUE)
    return collection


def lexical(client: TestClient, name: str, text: str, **body: object) -> list[str]:
    return ids(search(client, name, text=text, mode="lexical", **body))


def test_lexical_finds_the_exact_code(client: TestClient, shop: str) -> None:
    assert lexical(client, shop, "XJ-9000") == ["p1"]
    assert lexical(client, shop, "xj-9001") == ["p2"]
    # metadata values: strings and numbers
    assert lexical(client, shop, "QZ-119") == ["p2"]
    assert lexical(client, shop, "1987") == ["p1"]
    assert lexical(client, shop, "zorblax") == ["p4"]
    assert lexical(client, shop, "no-such-code") == []


def test_lexical_ranks_by_relevance_and_any_word_matches(client: TestClient, shop: str) -> None:
    found = search(client, shop, text="travel charger XJ-9000", mode="lexical", k=10)
    assert ids(found)[0] == "p1"  # every term
    assert set(ids(found)) == {"p1", "p2", "p5"}  # any term
    scores = [hit["score"] for hit in found["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    assert found["query_modality"] == "text"


def test_accents(client: TestClient, shop: str, database_url: str) -> None:
    assert lexical(client, shop, "café") == ["p4"]
    if database_url.startswith("sqlite"):  # unicode61 removes diacritics; Postgres' simple keeps
        assert lexical(client, shop, "CAFE") == ["p4"]


def test_filters_offset_and_min_score_apply(client: TestClient, shop: str) -> None:
    assert lexical(client, shop, "charger travel", filter={"sku": "QZ-119"}) == ["p2"]
    assert lexical(client, shop, "charger", modalities=["image"]) == []
    every = lexical(client, shop, "travel kit charger", k=10)
    assert lexical(client, shop, "travel kit charger", k=1, offset=1) == every[1:2]
    found = search(client, shop, text="travel kit charger", mode="lexical", k=10)
    floor = found["results"][1]["score"]
    above = search(client, shop, text="travel kit charger", mode="lexical", min_score=floor)
    assert ids(above) == [h["item"]["id"] for h in found["results"] if h["score"] >= floor]
    assert len(ids(above)) < len(every)


def test_filters_apply_to_hybrid_too(client: TestClient, shop: str) -> None:
    text = "charger travel"
    assert ids(search(client, shop, text=text, mode="hybrid", filter={"sku": "QZ-119"})) == ["p2"]
    assert ids(search(client, shop, text=text, mode="hybrid", modalities=["image"])) == []


def test_updates_and_deletes_are_followed(client: TestClient, shop: str) -> None:
    url = f"/v1/collections/{shop}/items"
    batch = [{"id": "p3", "text": "a quimble, not an umbrella", "metadata": {"sku": "UM-1"}}]
    replaced = client.post(f"{url}/batch", json=batch).json()["results"]
    assert [r["status"] for r in replaced] == [200], replaced
    assert lexical(client, shop, "quimble") == ["p3"]
    assert lexical(client, shop, "wooden") == []
    patched = client.patch(f"{url}/p3", json={"metadata": {"sku": "UM-2"}})
    assert patched.status_code == 200, patched.text
    assert lexical(client, shop, "UM-2") == ["p3"]
    assert lexical(client, shop, "UM-1") == []
    assert client.delete(f"{url}/p1").status_code == 204
    assert lexical(client, shop, "XJ-9000") == []
    assert lexical(client, shop, "QZ-118") == []


def test_collections_are_apart(client: TestClient, shop: str) -> None:
    assert client.post("/v1/collections", json={"name": "other"}).status_code == 201
    add_texts(client, "other", {"o1": ("XJ-9000 in another collection", {})})
    assert lexical(client, shop, "XJ-9000") == ["p1"]
    assert lexical(client, "other", "XJ-9000") == ["o1"]
    assert client.delete(f"/v1/collections/{shop}").status_code == 204
    assert lexical(client, "other", "charger XJ-9000") == ["o1"]


def test_metadata_postgres_cannot_read_as_text_leaves_the_text_searchable(
    client: TestClient, collection: str
) -> None:
    # a NUL in a key is valid JSON, but not Postgres text
    item = {"id": "odd", "text": "plain words here", "metadata": {"k\x00": "v"}}
    response = client.post(
        f"/v1/collections/{collection}/items/batch",
        content=json.dumps([item]),
        headers={"content-type": "application/json"},
    )
    assert [r["status"] for r in response.json()["results"]] == [201], response.text
    assert lexical(client, collection, "plain") == ["odd"]


def blended(
    client: TestClient, name: str, text: str | None = None, **body: object
) -> dict[str, float]:
    """Every item's hybrid score as documented, from the vector and lexical modes' own and
    the weight the query's rarest word gives (docs/search.md)."""
    query = {"text": text} if text is not None else {}
    words = text or words_of(body)
    cosine = scores(search(client, name, **query, **body, k=1000))
    lexical = scores(search(client, name, text=words, mode="lexical", k=1000))
    w = documented_weight(client, name, words)
    return {item: (1 - w) * cosine[item] + w * lexical.get(item, 0.0) for item in cosine}


def documented_weight(client: TestClient, name: str, words: str) -> float:
    """0.9 x s^2, s the largest idf of the words some item holds over the idf of a word one
    item holds; idf = ln(1 + (N - n + 0.5) / (n + 0.5)), counted with lexical searches."""
    size = len(search(client, name, text=words, k=1000)["results"])
    held = [len(lexical(client, name, word, k=1000)) for word in dict.fromkeys(words.split())]
    idf = [math.log(1 + (size - n + 0.5) / (n + 0.5)) for n in held if n]
    if not idf:
        return 0.0
    s = max(idf) / math.log(1 + (size - 1 + 0.5) / 1.5)
    return MAX_LEXICAL_WEIGHT * s * s


def scores(result: dict) -> dict[str, float]:  # type: ignore[type-arg]
    return {hit["item"]["id"]: hit["score"] for hit in result["results"]}


def words_of(body: dict) -> str:  # type: ignore[type-arg]
    return " ".join(p["text"] for p in body["query"] if "text" in p and p.get("weight", 1) > 0)


def test_hybrid_blends_cosine_and_lexical_score(client: TestClient, shop: str) -> None:
    add_texts(client, shop, {f"n{i}": (f"filler sentence {i} travel", {}) for i in range(20)})
    text = "XJ-9000 travel charger"
    expected = blended(client, shop, text)
    hybrid = search(client, shop, text=text, mode="hybrid", k=8)
    got = scores(hybrid)
    assert len(got) == 8
    for item, score in got.items():
        assert score == pytest.approx(expected[item], abs=1e-5)
    best = sorted(expected.values(), reverse=True)[:8]
    assert sorted(got.values(), reverse=True) == pytest.approx(best, abs=1e-5)
    assert ids(hybrid)[0] == "p1"  # the code and the words
    page = search(client, shop, text=text, mode="hybrid", k=3, offset=2)
    assert ids(page) == ids(hybrid)[2:5]
    floor = hybrid["results"][3]["score"]
    assert ids(search(client, shop, text=text, mode="hybrid", min_score=floor)) == ids(hybrid)[:4]


def test_hybrid_scores_each_item_by_both_sides(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lists two items deep: what the vector side found has a lexical score, what the
    # lexical side found a cosine, both computed rather than taken as 0
    monkeypatch.setattr(search_service, "HYBRID_DEPTH", 2)
    texts = {f"f{i}": (f"plain filler {i}", {}) for i in range(30)}
    texts["needle"] = ("plain qwertyuiop", {})
    add_texts(client, collection, texts)
    text = "plain filler qwertyuiop"
    expected = blended(client, collection, text)
    got = scores(search(client, collection, text=text, mode="hybrid", k=2))
    vector = ids(search(client, collection, text=text, k=2))
    lexical = ids(search(client, collection, text=text, mode="lexical", k=2))
    assert set(got) - set(vector) and set(got) - set(lexical)  # each side is completed
    for item, score in got.items():
        assert score == pytest.approx(expected[item], abs=1e-5)


def test_hybrid_of_a_composed_query_searches_its_positive_text_parts(
    client: TestClient, shop: str
) -> None:
    query = [{"text": "umbrella", "weight": 1.0}, {"text": "XJ-9000", "weight": -0.5}]
    hybrid = search(client, shop, query=query, mode="hybrid", k=5)
    assert hybrid["query_modality"] == "composed"
    expected = blended(client, shop, query=query)
    for hit in hybrid["results"]:
        assert hit["score"] == pytest.approx(expected[hit["item"]["id"]], abs=1e-5)
    assert ids(search(client, shop, query=query, mode="lexical")) == ["p3"]


@pytest.mark.parametrize(
    "body",
    [
        {"item_id": "p1", "mode": "lexical"},
        {"vector": [1.0, 0.0], "mode": "hybrid"},
        {"query": [{"text": "x", "weight": -1.0}, {"item_id": "p1"}], "mode": "lexical"},
        {"query": [{"item_id": "p1"}], "mode": "hybrid"},
    ],
)
def test_word_modes_need_words(client: TestClient, shop: str, body: dict) -> None:  # type: ignore[type-arg]
    response = client.post(f"/v1/collections/{shop}/search", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert "mode 'vector'" in response.json()["error"]["message"]


def test_unknown_mode_is_refused(client: TestClient, shop: str) -> None:
    response = client.post(f"/v1/collections/{shop}/search", json={"text": "x", "mode": "bm25"})
    assert response.status_code == 422, response.text


def test_form_takes_the_mode(client: TestClient, shop: str) -> None:
    url = f"/v1/collections/{shop}/search"
    found = client.post(url, data={"text": "QZ-118", "mode": "lexical"}, files={"k": (None, "3")})
    assert found.status_code == 200, found.text
    assert ids(found.json()) == ["p1"]
    refused = client.post(url, data={"mode": "lexical"}, files={"file": ("q.png", b"x")})
    assert refused.status_code in (415, 422), refused.text


HOSTILE = st.one_of(
    st.text(min_size=1, max_size=200),
    st.lists(
        st.sampled_from(
            [
                '"',
                "'",
                "*",
                "NEAR(",
                ")",
                "(",
                "text:",
                "meta:",
                "^",
                "-",
                "AND",
                "OR",
                "NOT",
                "<->",
                "&",
                "|",
                "!",
                ":*",
                "\\",
                "XJ-9000",
                "{",
                "}",
                "+",
                "\u00e9",
                "\x00",
            ]
        ),
        min_size=1,
        max_size=40,
    ).map(" ".join),
    # control, format, private and unassigned characters among words (the JSON parser
    # refuses lone surrogates with a 400: tests/index/test_fulltext.py sends them to SQL)
    st.text(
        st.one_of(
            st.sampled_from("XJ-9000 travel"), st.characters(categories=["Cc", "Cf", "Co", "Cn"])
        ),
        min_size=1,
        max_size=60,
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=HOSTILE, mode=st.sampled_from(["lexical", "hybrid"]))
def test_hostile_query_text_is_only_words(
    client: TestClient, shop: str, text: str, mode: str
) -> None:
    response = client.post(
        f"/v1/collections/{shop}/search", json={"text": text, "mode": mode, "k": 5}
    )
    if not text.strip():
        assert response.status_code in (200, 422), response.text
        return
    assert response.status_code == 200, response.text
    assert set(ids(response.json())) <= set(CATALOGUE)


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
@pytest.mark.parametrize("separator", ["\x00", "\x01", "\x1f", "\x7f", "\u200b", "\ue000"])
def test_a_control_character_separates_words(
    client: TestClient, shop: str, separator: str, mode: str
) -> None:
    # FTS5's query parser takes NUL for the end of the string, Postgres refuses NUL
    body = {"text": f"XJ-9000{separator}zzz", "mode": mode, "k": 1}
    response = client.post(f"/v1/collections/{shop}/search", json=body)
    assert response.status_code == 200, response.text
    assert ids(response.json()) == ["p1"]


def test_longest_query_is_answered(client: TestClient, shop: str) -> None:
    text = ("XJ-9000 " + "NEAR(a* " * 4000)[:MAX_TEXT_CHARS]
    assert lexical(client, shop, text)[0] == "p1"
    assert "p1" in ids(search(client, shop, text="x" * MAX_TEXT_CHARS, mode="hybrid"))


def test_restart_and_a_second_process_see_the_same_index(
    make_settings: Callable[..., Settings], tmp_path: object
) -> None:
    first = make_settings()
    with TestClient(create_app(first)) as one:
        assert one.post("/v1/collections", json={"name": "c"}).status_code == 201
        add_texts(one, "c", {"a": ("XJ-9000 here", {})})
        # another process over the same database, with its own data directory
        other = make_settings(data_dir=first.data_dir.parent / "other")
        with TestClient(create_app(other)) as two:
            assert lexical(two, "c", "XJ-9000") == ["a"]
            add_texts(two, "c", {"b": ("QZ-7 there", {})})
            assert lexical(one, "c", "QZ-7") == ["b"]
            assert one.delete("/v1/collections/c/items/a").status_code == 204
            assert lexical(two, "c", "XJ-9000") == []
    with TestClient(create_app(first)) as again:
        assert lexical(again, "c", "QZ-7 XJ-9000") == ["b"]


def test_server_processes_share_the_index_and_kill_9_keeps_it(
    tmp_path: Path, database_url: str
) -> None:
    """Real processes over one database: a write through one is found by the other's first
    lexical search (nothing to follow), and survives ``kill -9`` of the writer."""
    env = server_env(tmp_path, database_url)
    url = "/v1/collections/shared"
    with ExitStack() as stack:
        one, two = (stack.enter_context(serve(env, tmp_path / f"server-{n}.log")) for n in range(2))
        assert httpx.post(f"{one.url}/v1/collections", json={"name": "shared"}).status_code == 201
        batch = [{"id": "a", "text": "XJ-9000 here"}, {"id": "b", "text": "QZ-7 there"}]
        written = httpx.post(f"{one.url}{url}/items/batch", json=batch, timeout=30)
        assert written.status_code == 200, written.text
        body = {"text": "XJ-9000", "mode": "lexical"}
        found = httpx.post(f"{two.url}{url}/search", json=body, timeout=30).json()
        assert ids(found) == ["a"]
        assert httpx.delete(f"{two.url}{url}/items/a", timeout=30).status_code == 204
        one.proc.send_signal(signal.SIGKILL)
        one.proc.wait()
        gone = httpx.post(f"{two.url}{url}/search", json=body, timeout=30).json()
        assert ids(gone) == []
    with serve(env, tmp_path / "server-again.log") as again:
        body = {"text": "QZ-7 XJ-9000", "mode": "lexical"}
        assert ids(httpx.post(f"{again.url}{url}/search", json=body, timeout=30).json()) == ["b"]


def test_a_deep_hybrid_page_scores_every_item_lexically(
    client: TestClient, collection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the vector side's items the lexical top missed are scored in IN lists of IN_CHUNK
    # keys (500; 4 here): a page past the first chunk once got lexical scores of 0
    monkeypatch.setattr(items_module, "IN_CHUNK", 4)
    monkeypatch.setattr(search_service, "HYBRID_DEPTH", 2)
    add_texts(
        client, collection, {f"f{i}": (f"plain filler {i} " * (i % 7 + 1), {}) for i in range(80)}
    )
    text = "plain filler 3"
    expected = blended(client, collection, text)
    lexical_top = set(ids(search(client, collection, text=text, mode="lexical", k=60)))
    vector_top = set(ids(search(client, collection, text=text, k=60)))
    assert len(vector_top - lexical_top) > 4  # more than one chunk to score
    got = scores(search(client, collection, text=text, mode="hybrid", k=30, offset=30))
    assert len(got) == 30
    for item, score in got.items():
        assert score == pytest.approx(expected[item], abs=1e-5)


def test_the_documented_scores_are_the_ones_computed(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/v1/collections/{name}/search"]["post"]["requestBody"]["content"]
    assert "2/61" not in json.dumps(form) and "reciprocal" not in json.dumps(form)
    weights = f"(1 - w) x cosine + w x lexical score, w = {MAX_LEXICAL_WEIGHT} x s^2"
    as_json = form["application/json"]["schema"]["properties"]
    as_form = form["multipart/form-data"]["schema"]["properties"]
    for field in (as_json["min_score"], as_json["mode"], as_form["min_score"], as_form["mode"]):
        assert weights in field["description"]
