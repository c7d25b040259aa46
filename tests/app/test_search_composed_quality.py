"""Composed queries do what they say with mmr-mini (issue 25), on renders it never saw:
"a circle" minus "red" ranks circles of the other colours first, and a picture plus a colour
word ("like this picture, but blue") brings that colour's version of the picture's shape up.

Measured on 96 renders (8 colours x 3 shapes x 4 sizes and places): red, blue or green
circles leave the 28 best answers for "a circle" once their colour is subtracted at weight
0.5 (4, 3 and 2 of them were there), and a picture of one shape plus 1.5 x a colour word puts
that colour's version of the shape among the 4 best in 9 cases of 9 (0 for the picture alone).
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.synth.world.images import Scene, render_scene
from models.synth.world.vocabulary import COLOURS, POSITIONS, SHAPES, SIZES

NAME = "world"
VARIANTS = 4
OTHER_CIRCLES = (len(COLOURS) - 1) * VARIANTS  # the circles of every other colour: 28


def png(scene: Scene, seed: list[int]) -> bytes:
    out = io.BytesIO()
    render_scene(scene, np.random.default_rng(seed), style="shifted").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """A collection of every colour and shape, four renders each: (client, id -> (colour,
    shape)). SQLite only: ranking is measured here, which no database changes (composed
    queries' plumbing runs on both in tests/app/test_search_composed.py)."""
    tmp = tmp_path_factory.mktemp("composed")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'mmr.sqlite3'}",
        model="mmr-mini",
        precision="fp32",
    )
    truth: dict[str, tuple[str, str]] = {}
    files = []
    for n, (colour, shape, v) in enumerate(itertools.product(COLOURS, SHAPES, range(VARIANTS))):
        rng = np.random.default_rng([7, n])
        thing = {
            "shape": shape,
            "colour": colour,
            "size": SIZES[rng.integers(len(SIZES))],
            "position": POSITIONS[rng.integers(len(POSITIONS))],
        }
        item_id = f"{colour}-{shape}-{v}"
        truth[item_id] = (colour, shape)
        files.append((item_id, png(Scene(objects=(thing,)), [8, n])))
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": NAME}).status_code == 201
        for i in range(0, len(files), 32):
            chunk = files[i : i + 32]
            response = client.post(
                f"/v1/collections/{NAME}/items/batch",
                files=[("file", (f"{x}.png", data, "image/png")) for x, data in chunk],
                data={"id": [x for x, _ in chunk]},
            )
            assert response.status_code == 200, response.text
        yield client, truth


def ranked(client: TestClient, body: dict[str, Any], k: int) -> list[str]:
    response = client.post(f"/v1/collections/{NAME}/search", json={**body, "k": k})
    assert response.status_code == 200, response.text
    return [hit["item"]["id"] for hit in response.json()["results"]]


@pytest.mark.parametrize("colour", ["red", "blue", "green"])
def test_a_circle_minus_a_colour_ranks_the_other_colours_circles_first(
    world: tuple[TestClient, dict], colour: str
) -> None:
    client, truth = world
    plain = ranked(client, {"text": "a circle"}, OTHER_CIRCLES)
    minus = ranked(
        client,
        {"query": [{"text": "a circle", "weight": 1.0}, {"text": colour, "weight": -0.5}]},
        OTHER_CIRCLES,
    )
    assert sum(truth[i] == (colour, "circle") for i in plain) >= 2  # they were there
    assert not [i for i in minus if truth[i][0] == colour]  # no longer: not even its squares
    assert sum(truth[i][1] == "circle" for i in minus) >= 0.7 * OTHER_CIRCLES


def test_a_picture_plus_a_colour_word_brings_that_colour_of_its_shape_up(
    world: tuple[TestClient, dict],
) -> None:
    client, truth = world
    found = {"alone": 0, "with the word": 0}
    cases = [
        (s, a, b)
        for s in SHAPES
        for a, b in (("red", "blue"), ("green", "blue"), ("yellow", "purple"))
    ]
    for n, (shape, colour, wanted) in enumerate(cases):
        thing = {"shape": shape, "colour": colour, "size": "large", "position": "center"}
        picture = base64.b64encode(png(Scene(objects=(thing,)), [99, n])).decode()
        for how, parts in (
            ("alone", [{"data": picture}]),
            ("with the word", [{"data": picture}, {"text": wanted, "weight": 1.5}]),
        ):
            best = ranked(client, {"query": parts}, 4)
            found[how] += any(truth[i] == (wanted, shape) for i in best)
    assert found["alone"] <= 1, found
    assert found["with the word"] >= 7, found  # 9 of 9 measured
