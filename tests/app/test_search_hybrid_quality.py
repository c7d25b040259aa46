"""Hybrid search with mmr-mini (issue 25), on a small catalogue written in its world: a
query naming an item's product code finds that item first though other items' captions
fit the query's words better, and a paraphrase finds the item that means it first though
another item holds more of its words. Neither side alone gets both right; hybrid does.
On SQLite and Postgres (the lexical side's counts and scores are each database's own)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.synth.world.vocabulary import COLOURS, POSITION_PHRASES, SHAPES
from tests.app.test_search import add_texts, ids, search

SIZES = ("large", "small", "big")  # "big" in captions too: not a rare word here
PLACES = tuple(POSITION_PHRASES.values())


def catalogue() -> dict[str, tuple[str, dict[str, object]]]:
    """Two items of every colour and shape (48), each with its own product code, and
    the two items the queries are about (with a decoy each)."""
    texts: dict[str, tuple[str, dict[str, object]]] = {}
    for n, (colour, shape, v) in enumerate(itertools.product(COLOURS, SHAPES, range(2))):
        size, place = SIZES[n % 3], PLACES[(n // 2 + v) % 5]
        texts[f"c{n}"] = (f"a {size} {colour} {shape} {place}, model KP-{1000 + n}", {})
    texts["code"] = ("a large red circle on the left, model XJ-4821", {})
    texts["code-decoy"] = ("a small red circle at the top, model QZ-1180", {})
    texts["meaning"] = ("a large yellow triangle in the center, model RT-3310", {})
    texts["meaning-decoy"] = (
        "a big yellow circle in the center and a small yellow triangle, model RT-3311",
        {},
    )
    return texts


@pytest.fixture
def shop(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, str]]:
    settings = make_settings(model="mmr-mini")
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": "shop"}).status_code == 201
        add_texts(client, "shop", catalogue())
        yield client, "shop"


def top(client: TestClient, name: str, text: str, mode: str) -> list[str]:
    return ids(search(client, name, text=text, mode=mode, k=5))


def test_hybrid_finds_the_named_code_and_the_paraphrase_first(
    shop: tuple[TestClient, str],
) -> None:
    client, name = shop
    code = "XJ-4821 small red circle"  # the code, and words that fit the decoy better
    assert top(client, name, code, "lexical")[0] == "code"
    assert top(client, name, code, "vector")[0] != "code"
    assert top(client, name, code, "hybrid")[0] == "code"
    paraphrase = "a big yellow triangle in the middle"  # the decoy holds more of its words
    assert top(client, name, paraphrase, "vector")[0] == "meaning"
    assert top(client, name, paraphrase, "lexical")[0] != "meaning"
    assert top(client, name, paraphrase, "hybrid")[0] == "meaning"
