"""Deterministic paired datasets (image↔caption, audio↔caption) and a demo set on disk.

Item i of a set depends only on (seed, modality, i): sets of different sizes share their
prefix, and each item draws its content, caption and rendering from separate streams, so
changing the caption detail or the rendering style leaves the rest of the item unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.synth.world.images import (
    Scene,
    caption_scene,
    image_file_bytes,
    render_scene,
    sample_scene,
)
from models.synth.world.sounds import (
    Sound,
    audio_file_bytes,
    caption_sound,
    sample_sound,
    synthesize,
)
from models.synth.world.vocabulary import Caption

_IMAGE, _AUDIO = 0, 1  # stream tags: a seed's images and sounds are independent
# (stage, done, total): how a long run says how far it is (the command line shows it).
Progress = Callable[[str, int, int], None]
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
}


@dataclass
class ImagePair:
    """A scene, one rendering of it and one caption of it."""

    scene: Scene
    image: Image.Image
    caption: Caption


@dataclass
class AudioPair:
    """A sound, one synthesis of it and one caption of it."""

    sound: Sound
    wave: np.ndarray
    sample_rate: int
    caption: Caption


def item_rngs(seed: int, modality: int, index: int) -> list[np.random.Generator]:
    """Four independent generators for item index: content, caption, rendering, file encoding."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, not {seed}")
    children = np.random.SeedSequence([seed, modality, index]).spawn(4)
    return [np.random.default_rng(child) for child in children]


def image_pair(
    seed: int, index: int, *, style: str = "train", detail: str = "random", two_shapes: float = 0.35
) -> ImagePair:
    """Item index of the image set for seed."""
    content, captioning, rendering, _ = item_rngs(seed, _IMAGE, index)
    scene = sample_scene(content, two_shapes=two_shapes)
    caption = caption_scene(scene, captioning, detail=detail)
    return ImagePair(scene, render_scene(scene, rendering, style=style), caption)


def audio_pair(
    seed: int,
    index: int,
    *,
    style: str = "train",
    detail: str = "random",
    sample_rate: int | None = None,
) -> AudioPair:
    """Item index of the audio set for seed."""
    content, captioning, rendering, _ = item_rngs(seed, _AUDIO, index)
    sound = sample_sound(content)
    caption = caption_sound(sound, captioning, detail=detail)
    wave, rate = synthesize(sound, rendering, style=style, sample_rate=sample_rate)
    return AudioPair(sound, wave, rate, caption)


def image_pairs(
    n: int, *, seed: int, style: str = "train", detail: str = "random", two_shapes: float = 0.35
) -> list[ImagePair]:
    """n image/caption pairs; the same seed gives the same pairs."""
    return [
        image_pair(seed, i, style=style, detail=detail, two_shapes=two_shapes) for i in range(n)
    ]


def audio_pairs(
    n: int,
    *,
    seed: int,
    style: str = "train",
    detail: str = "random",
    sample_rate: int | None = None,
) -> list[AudioPair]:
    """n audio/caption pairs; the same seed gives the same pairs."""
    return [
        audio_pair(seed, i, style=style, detail=detail, sample_rate=sample_rate) for i in range(n)
    ]


def write_demo_set(
    out_dir: Path,
    *,
    n_images: int,
    n_sounds: int,
    seed: int,
    style: str = "train",
    progress: Progress | None = None,
) -> Path:
    """Write image and audio files plus manifest.jsonl into out_dir; return the manifest path.
    ``progress(stage, done, total)`` hears of each file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or _silent
    records = []
    for i in range(n_images):  # made one at a time (as image_pairs does), so each is reported
        pair = image_pair(seed, i, style=style)
        data, mime = image_file_bytes(pair.image, item_rngs(seed, _IMAGE, i)[3])
        name = f"image_{i:05d}_{_slug(pair.scene)}{_EXTENSIONS[mime]}"
        records.append(_record(out_dir / name, data, "image", pair.caption, pair.scene))
        report("writing images", i + 1, n_images)
    for i in range(n_sounds):
        sound_pair = audio_pair(seed, i, style=style)
        encoding = item_rngs(seed, _AUDIO, i)[3]
        data, mime = audio_file_bytes(sound_pair.wave, sound_pair.sample_rate, encoding)
        name = f"audio_{i:05d}_{_slug(sound_pair.sound)}{_EXTENSIONS[mime]}"
        records.append(_record(out_dir / name, data, "audio", sound_pair.caption, sound_pair.sound))
        report("writing sounds", i + 1, n_sounds)
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return manifest


def _silent(stage: str, done: int, total: int) -> None:
    pass


def _slug(thing: Scene | Sound) -> str:
    """What a thing is, for a file name: "red-circle+blue-square", "two-high-beeps"."""
    order = ("size", "colour", "shape", "count", "pitch", "direction", "kind")
    return "+".join(
        "-".join(obj[k] for k in order if k in obj and k != "size") for obj in thing.objects
    )


def _record(
    path: Path, data: bytes, modality: str, caption: Caption, thing: Scene | Sound
) -> dict[str, object]:
    path.write_bytes(data)
    return {
        "file": path.name,
        "modality": modality,
        "caption": caption.text,
        "attributes": [dict(obj) for obj in thing.objects],
    }
