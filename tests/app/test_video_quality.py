"""Finding the moment in a video: mmr-mini over world videos it never saw.

Each video shows shapes that appear, move across and leave, and plays sounds, at known times
(models/synth/world/videos.py, the "shifted" renderer and synthesiser, which training never
used). The text of each event must find its video first, at a start-end that overlaps the
event, for at least 90% of the events. The corpus is bench/video.py's ``kind`` design (what
mmr-mini tells apart: colours, kinds of sound); `python -m bench --only video` measures more
corpora, and the harder design too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from bench.video import ask, world_corpus
from models.synth.world.sounds import audio_file_bytes, synthesize


def test_text_finds_the_event_in_the_right_video_at_the_right_moment(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", model="mmr-mini", device="cpu", torch_threads=2, _env_file=None
    )
    with TestClient(create_app(settings)) as client:
        answers = [
            a for seed in (1, 2, 3) for a in ask(client, f"w{seed}", world_corpus(3, seed=seed))
        ]
    assert len(answers) == 36
    assert {a.modality for a in answers} == {"image", "audio"}
    missed = [(a.query, a.video, a.event, a.hit, a.span) for a in answers if not a.right]
    assert len(missed) <= 0.1 * len(answers), missed


def test_a_recorded_sound_finds_the_moment_it_plays_in_a_video(tmp_path: Path) -> None:
    """A fresh recording of each sound of the corpus (a sound query) finds the video that
    plays it first, at a moment that overlaps it, for most of them."""
    settings = Settings(
        data_dir=tmp_path / "data", model="mmr-mini", device="cpu", torch_threads=2, _env_file=None
    )
    videos = world_corpus(3, seed=4)
    with TestClient(create_app(settings)) as client:
        ask(client, "w", videos)  # uploads them as v0, v1, v2
        right = total = 0
        for n, video in enumerate(videos):
            for event in (e for e in video.events if e.modality == "audio"):
                rng = np.random.default_rng(total)
                wave, rate = synthesize(event.thing, rng, style="shifted")
                query = audio_file_bytes(wave, rate, rng, fmt="wav")[0]
                found = client.post(
                    "/v1/collections/w/search", files={"file": ("q.wav", query)}, data={"k": "1"}
                ).json()["results"][0]
                total += 1
                right += (
                    found["item"]["id"] == f"v{n}"
                    and found["start"] < event.end
                    and event.start < found["end"]
                )
    assert total == 6 and right >= 5, (right, total)
