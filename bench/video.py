"""Video: finding the moment (mmr-mini over world videos) and decoding throughput.

Quality: world videos (models/synth/world/videos.py) show shapes that appear, move and leave,
and play sounds, at known times; each event's text ("a red circle", "two high beeps") is a
query, right when the first hit is its video and the hit's ``start``-``end`` overlaps the
event. The renders and recordings are the "shifted" ones mmr-mini never trained on.

Throughput: ``decode_video`` (every frame decoded, thumbnailed and sampled, the sound
resampled) against PyAV decoding the same frames and doing nothing else, in the same run:
frames per second and the realtime factor (seconds of video per second of decoding).
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from fastapi.testclient import TestClient

from bench.config import BenchConfig
from models.media.video import VideoLimits, decode_video
from models.synth.world.images import Scene
from models.synth.world.sounds import SOUND_CLASSES, Sound
from models.synth.world.videos import (
    CONTAINERS,
    WorldVideo,
    encode_video,
    event_query,
    world_video,
)
from models.synth.world.vocabulary import COLOURS, SHAPES

LIMITS = VideoLimits(
    max_seconds=3600,
    max_frames=10**6,
    max_pixels=3840 * 2160,
    decode_seconds=600,
    sample_frames=64,
    max_interval_s=5.0,
)
# (width, height, seconds, fps) of the throughput clips.
CLIPS = ((320, 240, 10, 25), (640, 360, 10, 25), (1280, 720, 5, 25))


@dataclass(frozen=True)
class Answer:
    """One event's query and what the first hit said."""

    query: str
    modality: str
    video: str
    event: tuple[float, float]
    hit: str | None
    span: tuple[float, float] | None

    @property
    def right(self) -> bool:
        """The event's video, at a moment that overlaps the event."""
        if self.hit != self.video or self.span is None:
            return False
        return self.span[0] < self.event[1] and self.event[0] < self.span[1]


# Sounds that mmr-mini tells apart by kind (and a chirp's direction): the pitch of a tone and
# the count of beeps it confuses now and then, so a corpus holds one tone and one beeps.
_KINDS = ("tone", "rising chirp", "falling chirp", "noise", "beeps", "chord")


def _sound(kind: str, rng: np.random.Generator) -> Sound:
    if kind.endswith("chirp"):
        return Sound(objects=({"kind": "chirp", "direction": kind.split()[0]},))
    attrs = {"kind": kind}
    if kind in ("tone", "beeps"):
        attrs["pitch"] = ("low", "high")[int(rng.integers(2))]
    if kind == "beeps":
        attrs["count"] = ("two", "three")[int(rng.integers(2))]
    return Sound(objects=(attrs,))


def world_corpus(
    n_videos: int,
    *,
    seed: int,
    scenes_per_video: int = 2,
    sounds_per_video: int = 2,
    distinct: str = "kind",
) -> list[WorldVideo]:
    """``n_videos`` world videos, in turn in every container, in which each event's text
    describes one event of the corpus.

    ``distinct="kind"`` (what the video path is measured on): shapes of distinct colours,
    white left out ("white noise" names a sound), and sounds of distinct kinds, one tone and
    one beeps: what mmr-mini tells apart every time (tests/app/test_quality.py: colours always
    right on stills, shapes 20 times in 24). ``"all"``: distinct colour-and-shape pairs and
    sound classes, bound by mmr-mini's own confusions of shape, pitch and count.
    """
    rng = np.random.default_rng(seed)
    n_scenes, n_sounds = n_videos * scenes_per_video, n_videos * sounds_per_video
    if distinct == "kind":
        colours = [c for c in COLOURS if c != "white"]
        combos = [(c, SHAPES[int(rng.integers(len(SHAPES)))]) for c in colours]
        sounds = [_sound(_KINDS[i], rng) for i in rng.permutation(len(_KINDS))]
    else:
        combos = list(itertools.product(COLOURS, SHAPES))
        sounds = [
            Sound(objects=(dict(a) | ({"pitch": "high"} if a["kind"] == "beeps" else {}),))
            for a in SOUND_CLASSES
        ]
        sounds = [sounds[i] for i in rng.permutation(len(sounds))]
    combos = [combos[i] for i in rng.permutation(len(combos))]
    if n_scenes > len(combos) or n_sounds > len(sounds):
        raise ValueError("more events than distinct shapes or sounds: fewer videos")
    videos = []
    for n in range(n_videos):
        scenes = [
            Scene(objects=({"colour": c, "shape": s, "size": "large", "position": "center"},))
            for c, s in combos[n * scenes_per_video : (n + 1) * scenes_per_video]
        ]
        heard = sounds[n * sounds_per_video : (n + 1) * sounds_per_video]
        container = list(CONTAINERS)[n % len(CONTAINERS)]
        videos.append(world_video(scenes, heard, seed=seed * 1000 + n, container=container))
    return videos


def ask(client: TestClient, name: str, videos: list[WorldVideo]) -> list[Answer]:
    """Upload the videos as v0, v1, ... into collection ``name`` and ask every event's text."""
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    for n, video in enumerate(videos):
        got = client.post(
            f"/v1/collections/{name}/items",
            files={"file": ("v", video.data)},
            data={"id": f"v{n}"},
        )
        if got.status_code != 201:
            raise RuntimeError(f"video v{n} was refused: {got.text}")
    answers = []
    for n, video in enumerate(videos):
        for event in video.events:
            query = event_query(event)
            body = {"text": query, "k": 1}
            found = client.post(f"/v1/collections/{name}/search", json=body).json()["results"]
            hit = found[0] if found else None
            answers.append(
                Answer(
                    query=query,
                    modality=event.modality,
                    video=f"v{n}",
                    event=(event.start, event.end),
                    hit=hit["item"]["id"] if hit else None,
                    span=(hit["start"], hit["end"]) if hit and hit["start"] is not None else None,
                )
            )
    return answers


def moving_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """A textured picture panning across the frame, with a cut every 2 s (at 25 fps)."""
    rng = np.random.default_rng(seed)
    frames, texture = [], None
    for i in range(count):
        if i % 50 == 0:
            texture = rng.integers(0, 256, (height // 8 + 1, width // 8 + 2, 3), dtype=np.uint8)
            texture = texture.repeat(8, 0).repeat(8, 1)
        assert texture is not None
        shift = (i * 3) % 8
        frames.append(np.ascontiguousarray(texture[:height, shift : shift + width]))
    return frames


def bare_decode(data: bytes) -> int:
    """PyAV decoding every frame and audio frame, doing nothing with them: the baseline."""
    frames = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        container.streams.video[0].thread_type = "AUTO"
        for frame in container.decode(*container.streams):
            frames += isinstance(frame, av.VideoFrame)
    return frames


def throughput(repeats: int = 3) -> list[dict[str, Any]]:
    """Frames/s and realtime factor of decode_video and of PyAV alone, per clip."""
    rows = []
    for width, height, seconds, fps in CLIPS:
        t = np.arange(seconds * 16_000) / 16_000
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        data = encode_video(
            moving_frames(width, height, seconds * fps),
            fps=fps,
            wave=wave,
            bit_rate=2_000_000,
        )
        for what, run in (
            ("PyAV alone (baseline)", lambda d=data: bare_decode(d)),
            (
                "decode_video",
                lambda d=data: len(
                    decode_video(d, limits=LIMITS, frame_side=448, audio_rate=16_000).frames
                ),
            ),
        ):
            best = min(_timed(run) for _ in range(repeats))
            rows.append(
                {
                    "clip": f"{width}x{height} {seconds} s {fps} fps MPEG-4 + AAC",
                    "what": what,
                    "seconds": best,
                    "frames_per_s": seconds * fps / best,
                    "realtime": seconds / best,
                }
            )
    return rows


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_video(cfg: BenchConfig, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The bench phase: quality on world videos of both designs, then decoding throughput."""
    from app.main import create_app
    from app.settings import Settings

    # (design, videos per corpus, seeds): seeds apart from the test's (1-3).
    designs = [("kind", 3, range(100, 102 if cfg.quick else 110))]
    designs.append(("all", 4, range(200, 201 if cfg.quick else 203)))
    settings = Settings(
        data_dir=work / "video", model="mmr-mini", device="cpu", torch_threads=2, _env_file=None
    )
    quality: dict[str, Any] = {}
    misses: list[dict[str, Any]] = []
    with TestClient(create_app(settings)) as client:
        for design, n_videos, seeds in designs:
            answers = [
                a
                for seed in seeds
                for a in ask(
                    client, f"{design}{seed}", world_corpus(n_videos, seed=seed, distinct=design)
                )
            ]
            quality[design] = {
                "corpora": len(seeds),
                "videos_per_corpus": n_videos,
                **{
                    kind: {
                        "queries": sum(a.modality == kind for a in answers),
                        "right": sum(a.right for a in answers if a.modality == kind),
                    }
                    for kind in ("image", "audio")
                },
                "all": {"queries": len(answers), "right": sum(a.right for a in answers)},
            }
            misses += [{"design": design, **a.__dict__} for a in answers if not a.right]
            got = quality[design]["all"]
            log(f"video: {design} design: {got['right']} of {got['queries']} right")
    rows = throughput(1 if cfg.quick else 3)
    for r in rows:
        log(f"video: {r['clip']}: {r['what']} {r['frames_per_s']:.0f} frames/s")
    return {"quality": quality, "misses": misses, "throughput": rows}


def video_md(result: dict[str, Any]) -> list[str]:
    """The phase's section of results.md."""
    lines = [
        "## Video",
        "",
        "Text queries about one event of world videos (mmr-mini, renders and recordings it "
        "never trained on): right = the first hit is the event's video, at a start-end that "
        "overlaps the event. Design `kind`: events told apart by colour and kind of sound; "
        "`all`: by colour and shape, and by every sound class (mmr-mini's own confusions).",
        "",
        "| design | corpora x videos | shapes right | sounds right | all right |",
        "|---|---|---|---|---|",
    ]
    for design, q in result["quality"].items():
        cells = [f"{q[k]['right']}/{q[k]['queries']}" for k in ("image", "audio")]
        share = q["all"]["right"] / max(1, q["all"]["queries"])
        lines.append(
            f"| {design} | {q['corpora']} x {q['videos_per_corpus']} | {cells[0]} | {cells[1]} "
            f"| {q['all']['right']}/{q['all']['queries']} ({share:.0%}) |"
        )
    lines += [
        "",
        "Decoding throughput (best of three; every frame decoded):",
        "",
        "| clip | decoder | seconds | frames/s | realtime factor |",
        "|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['clip']} | {r['what']} | {r['seconds']:.3f} | {r['frames_per_s']:.0f} | "
            f"{r['realtime']:.1f}x |"
        )
    return [*lines, ""]
