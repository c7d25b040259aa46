"""Decoded media through the API: pixel bombs shrunk, per-request budget (413), process
budget (429 with Retry-After), and nothing left reserved once requests are answered."""

from __future__ import annotations

import gc
import io
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.services.media import process_budget
from app.settings import Settings
from models.media.budget import MB, DecodeBudget
from models.media.image import kept_size, shrink_factor
from tests.conftest import error_code

# Capacities no other test uses: the process budget is one per capacity and per process.
PROCESS_MB = 97.0
SIDE = 300  # the noise images' side


def png(side: int, *, seed: int = 0, mode: str = "RGB") -> bytes:
    """A noisy PNG (random pixels; mode L zeros when ``mode`` is "bomb")."""
    buffer = io.BytesIO()
    if mode == "bomb":
        Image.new("L", (side, side)).save(buffer, "PNG", optimize=True)
    else:
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def kept_bytes(client: TestClient, side: int) -> int:
    """Bytes the server keeps of a decoded side x side image (RGB: 4 a pixel)."""
    image_size = client.app.state.services.embedder.image_size  # type: ignore[attr-defined]
    # The service shrinks to twice the encoder's input (app/services/media.py).
    width, height = kept_size((side, side), shrink_factor((side, side), 2 * image_size))
    return width * height * 4


def files(*uploads: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"f{i}.png", data, "image/png")) for i, data in enumerate(uploads)]


@pytest.fixture
def budget() -> DecodeBudget:
    """The process budget of the test servers (MMR_MAX_DECODED_MB=PROCESS_MB)."""
    return process_budget(int(PROCESS_MB * MB))


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(max_decoded_mb=PROCESS_MB))) as c:
        assert c.post("/v1/collections", json={"name": "c"}).status_code == 201
        yield c


def released(budget: DecodeBudget) -> bool:
    """Whether every decoded byte is given back (what requests kept is garbage now)."""
    gc.collect()
    return budget.used == 0


def test_pixel_bombs_are_taken_and_nothing_stays_reserved(
    client: TestClient, budget: DecodeBudget
) -> None:
    bomb = png(8000, mode="bomb")  # 62 KB; 8000 x 8000 decodes to 64 MB (in L)
    assert len(bomb) < 100_000
    item = client.post("/v1/collections/c/items", files=files(bomb))
    assert item.status_code == 201, item.text
    batch = client.post("/v1/collections/c/items/batch", files=files(*[bomb] * 3))
    assert [r["status"] for r in batch.json()["results"]] == [201] * 3
    assert client.post("/v1/collections/c/search", files=files(bomb)).status_code == 200
    assert client.post("/v1/embed", files=files(*[bomb] * 4)).status_code == 200
    assert released(budget)


def test_a_bomb_too_large_to_decode_at_once_is_413(client: TestClient) -> None:
    # 8000 x 8000 RGBA: 256 MB of pixels and a premultiplied copy, over PROCESS_MB.
    buffer = io.BytesIO()
    Image.new("RGBA", (8000, 8000)).save(buffer, "PNG", optimize=True)
    response = client.post("/v1/collections/c/items", files=files(buffer.getvalue()))
    assert response.status_code == 413
    assert error_code(response) == "media_too_large"
    assert "MMR_MAX_DECODED_MB" in response.json()["error"]["message"]


@pytest.fixture
def per_request(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """A server whose requests may keep two noise images decoded, not three."""
    with TestClient(create_app(make_settings(max_decoded_mb=PROCESS_MB))) as probe:
        kept = kept_bytes(probe, SIDE)
    settings = make_settings(max_decoded_mb=PROCESS_MB, max_decoded_mb_per_request=2.5 * kept / MB)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/collections", json={"name": "c"}).status_code == 201
        yield c


def test_batch_entries_past_the_request_budget_are_413_in_place(
    per_request: TestClient, budget: DecodeBudget
) -> None:
    uploads = [png(SIDE, seed=i) for i in range(4)]
    response = per_request.post("/v1/collections/c/items/batch", files=files(*uploads))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 413, 413]
    error = results[2]["error"]
    assert error["code"] == "media_too_large"
    assert "MMR_MAX_DECODED_MB_PER_REQUEST" in error["message"]
    assert "fewer or smaller files per request" in error["message"]
    # Each request has its own budget: the refused ones go through on their own.
    again = per_request.post("/v1/collections/c/items/batch", files=files(*uploads[2:]))
    assert [r["status"] for r in again.json()["results"]] == [201, 201]
    assert released(budget)


def multipart(uploads: list[bytes]) -> tuple[bytes, str]:
    """The multipart body httpx sends for these files, and its Content-Type."""
    request = httpx.Request("POST", "http://x/", files=files(*uploads))
    return request.read(), request.headers["content-type"]


def chunked(body: bytes) -> Iterator[bytes]:
    """A body without Content-Length: the fast path leaves it to the route."""
    yield body


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "route"])
def test_embed_over_the_request_budget_is_413(
    per_request: TestClient, budget: DecodeBudget, fast: bool
) -> None:
    uploads = [png(SIDE, seed=i) for i in range(3)]
    for sent, status in ((uploads, 413), (uploads[:2], 200)):
        body, ctype = multipart(sent)
        content = body if fast else chunked(body)
        response = per_request.post("/v1/embed", content=content, headers={"content-type": ctype})
        assert response.status_code == status, response.text
    assert released(budget)


@pytest.mark.parametrize(
    ("path", "count"),
    [("items", 1), ("items/batch", 2), ("search", 1), ("/v1/embed", 2)],
)
def test_a_full_process_budget_answers_429_with_retry_after(
    client: TestClient,
    budget: DecodeBudget,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    count: int,
) -> None:
    monkeypatch.setattr(budget, "wait_s", 0.05)
    url = path if path.startswith("/") else f"/v1/collections/c/{path}"
    budget._take(budget.capacity, budget.capacity, "other requests")
    try:
        response = client.post(url, files=files(*[png(SIDE)] * count))
    finally:
        budget._give_back(budget.capacity)
    assert response.status_code == 429, response.text
    assert error_code(response) == "overloaded"
    assert response.headers["retry-after"] == "1"
    assert client.get("/v1/collections/c").json()["count"] == 0
    assert client.post(url, files=files(*[png(SIDE)] * count)).status_code in (200, 201)
    assert released(budget)
