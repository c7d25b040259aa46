"""A video hit on the search page: the frame at the moment that matched, and a button that
plays the video from that moment (headless Chromium against a real server on mmr-mini)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from models.synth.world.videos import encode_video
from tests.app.test_crash import serve
from tests.ui.conftest import Site, _env
from tests.ui.demo import Demo

pytestmark = pytest.mark.slow

NAME = "clips"
FPS = 10


def frames() -> list[np.ndarray]:
    """Grey for 3 s, then a red square for 3 s."""
    grey = np.full((64, 96, 3), 200, np.uint8)
    red = grey.copy()
    red[16:48, 32:64] = (220, 30, 30)
    return [grey] * (3 * FPS) + [red] * (3 * FPS)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """mmr serve on mmr-mini holding one WebM video (VP8: what every Chromium plays)."""
    root = tmp_path_factory.mktemp("ui-video")
    with serve(_env(root / "data"), root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            http.post("/v1/collections", json={"name": NAME}).raise_for_status()
            video = encode_video(frames(), fps=FPS, container="webm")
            files = {"file": ("clip.webm", video, "video/webm")}
            http.post(f"/v1/collections/{NAME}/items", files=files, data={"id": "clip"})
        yield Site(server, Demo())


def test_a_video_hit_shows_its_moment_and_plays_from_it(page: Any, site: Site) -> None:
    body = {"text": "a red square", "k": 1, "modalities": ["video"]}
    hit = httpx.post(f"{site.url}/v1/collections/{NAME}/search", json=body).json()["results"][0]
    assert hit["start"] > 0  # the red square's moment, not the video's beginning
    page.fill("#query", "a red square")
    item = '#results > li[data-id="clip"]'
    page.wait_for_selector(f"{item} img[src^='blob:']")
    moments = [float(u.split("?t=")[1]) for u in page.watch.requests if "/thumbnail?t=" in u]
    assert moments == [pytest.approx(hit["start"])]
    page.click(f"{item} button:has-text('Play from')")
    player = f"{item} video"
    page.wait_for_selector(player)
    deadline = time.monotonic() + 20
    position = -1.0
    while time.monotonic() < deadline:
        position = page.eval_on_selector(player, "v => v.readyState > 0 ? v.currentTime : -1")
        if position >= hit["start"]:
            break
        time.sleep(0.1)
    assert position >= hit["start"] - 0.05
