"""Paired datasets: deterministic by seed, item by item, and fast enough to train on."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from models.synth.world.images import render_scene, sample_scene
from models.synth.world.pairs import AudioPair, ImagePair, audio_pairs, image_pairs, write_demo_set
from models.synth.world.sounds import sample_sound, synthesize
from models.synth.world.vocabulary import describes, parse_caption


def same_images(a: list[ImagePair], b: list[ImagePair]) -> bool:
    return all(
        x.scene == y.scene
        and x.caption == y.caption
        and np.array_equal(np.asarray(x.image), np.asarray(y.image))
        for x, y in zip(a, b, strict=True)
    )


def same_sounds(a: list[AudioPair], b: list[AudioPair]) -> bool:
    return all(
        x.sound == y.sound
        and x.caption == y.caption
        and x.sample_rate == y.sample_rate
        and np.array_equal(x.wave, y.wave)
        for x, y in zip(a, b, strict=True)
    )


def test_the_same_seed_gives_identical_pairs() -> None:
    assert same_images(image_pairs(8, seed=3), image_pairs(8, seed=3))
    assert same_sounds(audio_pairs(8, seed=3), audio_pairs(8, seed=3))
    assert same_images(
        image_pairs(4, seed=3, style="shifted"), image_pairs(4, seed=3, style="shifted")
    )


def test_an_item_does_not_depend_on_the_set_size() -> None:
    assert same_images(image_pairs(10, seed=4)[:5], image_pairs(5, seed=4))
    assert same_sounds(audio_pairs(10, seed=4)[:5], audio_pairs(5, seed=4))


def test_different_seeds_give_different_sets() -> None:
    a, b = image_pairs(20, seed=5), image_pairs(20, seed=6)
    assert [p.caption.text for p in a] != [p.caption.text for p in b]
    assert not any(
        x.image.size == y.image.size and np.array_equal(np.asarray(x.image), np.asarray(y.image))
        for x, y in zip(a, b, strict=True)
    )
    waves = [p.wave for p in audio_pairs(10, seed=5)] + [p.wave for p in audio_pairs(10, seed=6)]
    assert len({w.tobytes() for w in waves}) == len(waves)


def test_style_and_detail_change_only_what_they_are_about() -> None:
    base = image_pairs(6, seed=7)
    shifted = image_pairs(6, seed=7, style="shifted")
    full = image_pairs(6, seed=7, detail="full")
    for b, s, f in zip(base, shifted, full, strict=True):
        assert b.scene == s.scene == f.scene and b.caption == s.caption
        assert np.array_equal(np.asarray(b.image), np.asarray(f.image))
        assert all(m.keys() == {"shape", "colour", "size", "position"} for m in f.caption.mentions)
    sounds = audio_pairs(6, seed=7, sample_rate=16000)
    assert all(p.sample_rate == 16000 for p in sounds)
    assert [p.sound for p in sounds] == [p.sound for p in audio_pairs(6, seed=7, style="shifted")]


def test_pair_captions_describe_their_things() -> None:
    for image_pair in image_pairs(30, seed=8):
        assert describes(parse_caption(image_pair.caption.text).mentions, image_pair.scene.objects)
    for audio_pair in audio_pairs(30, seed=8):
        assert describes(parse_caption(audio_pair.caption.text).mentions, audio_pair.sound.objects)


def test_a_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        image_pairs(1, seed=-1)


def test_demo_set_files_decode_and_match_the_manifest(tmp_path: Path) -> None:
    manifest = write_demo_set(tmp_path / "demo", n_images=12, n_sounds=12, seed=9)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["modality"] for r in records] == ["image"] * 12 + ["audio"] * 12
    for record in records:
        data = (manifest.parent / record["file"]).read_bytes()
        assert describes(parse_caption(record["caption"]).mentions, record["attributes"])
        if record["modality"] == "image":
            with Image.open(io.BytesIO(data)) as image:
                assert image.convert("RGB").size[0] >= 64
        else:
            wave, rate = sf.read(io.BytesIO(data), dtype="float32")
            assert 0.9 <= wave.shape[0] / rate <= 3.2


def test_rendering_speed() -> None:
    rng = np.random.default_rng(10)
    scenes = [sample_scene(rng) for _ in range(200)]
    sounds = [sample_sound(rng) for _ in range(200)]
    started = time.perf_counter()
    for i, scene in enumerate(scenes):
        render_scene(scene, np.random.default_rng(i))
    per_image = (time.perf_counter() - started) / len(scenes)
    started = time.perf_counter()
    for i, sound in enumerate(sounds):
        synthesize(sound, np.random.default_rng(i))
    per_clip = (time.perf_counter() - started) / len(sounds)
    print(f"train style: {per_image * 1e3:.2f} ms per image, {per_clip * 1e3:.2f} ms per clip")
    assert per_image < 0.01 and per_clip < 0.01  # a sanity bound, not a benchmark
