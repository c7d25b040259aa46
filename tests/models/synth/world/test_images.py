"""Scenes, their captions and their renderings: captions never lie and pixels agree with them."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from models.synth.world.colours import COLOUR_RANGES, prototype
from models.synth.world.images import (
    Scene,
    caption_scene,
    image_file_bytes,
    render_scene,
    sample_scene,
)
from models.synth.world.layout import place_shapes, separation
from models.synth.world.vocabulary import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    WORDS,
    describes,
    parse_caption,
)
from tests.models.synth.world.analysis import centroid, foreground, median_hsv

STYLES = ("train", "shifted")
OPPOSITE = {("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top")}


def scenes(n: int, seed: int, two_shapes: float = 0.35) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, two_shapes=two_shapes) for _ in range(n)]


def test_scenes_follow_the_rules() -> None:
    drawn = scenes(600, seed=1)
    pairs = [s.objects for s in drawn if len(s.objects) == 2]
    assert all(1 <= len(s.objects) <= 2 for s in drawn)
    assert 0.25 < len(pairs) / len(drawn) < 0.45
    for obj in (o for s in drawn for o in s.objects):
        assert obj["shape"] in SHAPES and obj["colour"] in COLOURS
        assert obj["size"] in SIZES and obj["position"] in POSITIONS
    for a, b in pairs:
        assert a["position"] != b["position"]
        assert (a["shape"], a["colour"]) != (b["shape"], b["colour"])
        if a["size"] == b["size"] == "large":
            assert (a["position"], b["position"]) in OPPOSITE


@pytest.mark.parametrize("detail", ["random", "full", "minimal"])
def test_captions_parse_back_and_never_lie(detail: str) -> None:
    rng = np.random.default_rng(2)
    for scene in scenes(300, seed=2):
        caption = caption_scene(scene, rng, detail=detail)
        parsed = parse_caption(caption.text)
        assert [dict(m) for m in parsed.mentions] == [dict(m) for m in caption.mentions]
        assert describes(caption.mentions, scene.objects), caption.text
        assert len(caption.mentions) == len(scene.objects)
        assert all({"colour", "shape"} <= m.keys() for m in caption.mentions)
        assert set(caption.text.split()) <= set(WORDS), caption.text


def test_detail_decides_what_is_said() -> None:
    rng = np.random.default_rng(3)
    drawn = scenes(400, seed=3)
    full = [caption_scene(s, rng, detail="full") for s in drawn]
    assert all(
        m.keys() == {"shape", "colour", "size", "position"} for c in full for m in c.mentions
    )
    minimal = [caption_scene(s, rng, detail="minimal") for s in drawn]
    assert all(m.keys() == {"shape", "colour"} for c in minimal for m in c.mentions)
    said = Counter(k for s in drawn for k in caption_scene(s, rng).mentions[0])
    assert 0.4 < said["size"] / len(drawn) < 0.6
    assert 0.4 < said["position"] / len(drawn) < 0.6
    with pytest.raises(ValueError, match="detail"):
        caption_scene(drawn[0], rng, detail="verbose")


def test_captions_come_in_several_phrasings() -> None:
    rng = np.random.default_rng(4)
    texts = [caption_scene(s, rng).text for s in scenes(300, seed=4)]
    openings = Counter(" ".join(t.split()[:2]) for t in texts)
    assert {"a picture", "an image"} & set(openings)
    assert any(t.startswith("the ") for t in texts)
    assert any(t.split()[0] in COLOURS for t in texts)  # bare "red circle"
    assert any(t.startswith(("on the", "at the", "in the")) for t in texts)
    assert any(" big " in f" {t} " for t in texts)


@pytest.mark.parametrize("style", STYLES)
def test_renders_are_rgb_within_their_size_ranges(style: str) -> None:
    shapes = set()
    for i, scene in enumerate(scenes(60, seed=5)):
        image = render_scene(scene, np.random.default_rng(i), style=style)
        assert image.mode == "RGB"
        width, height = image.size
        shapes.add(image.size)
        if style == "train":
            assert min(width, height) >= 64 and max(width, height) <= 160
            assert 0.79 <= height / width <= 1.26
        else:
            assert width == height and 96 <= width <= 256
    assert len(shapes) > 20


@pytest.mark.parametrize("style", STYLES)
def test_a_shape_is_where_the_caption_says_in_the_stated_colour(style: str) -> None:
    for i, scene in enumerate(scenes(80, seed=6, two_shapes=0.0)):
        obj = scene.objects[0]
        image = render_scene(scene, np.random.default_rng(i), style=style, clean=True)
        mask = foreground(image, image.getpixel((0, 0)))  # type: ignore[arg-type]
        x, y = centroid(mask)
        expected = {
            "left": x < 0.4,
            "right": x > 0.6,
            "top": y < 0.4,
            "bottom": y > 0.6,
            "center": 0.38 < x < 0.62 and 0.38 < y < 0.62,
        }
        assert expected[obj["position"]], (obj, x, y)
        assert_colour(obj["colour"], median_hsv(image, mask))
        coverage = mask.mean()
        assert coverage < 0.09 if obj["size"] == "small" else coverage > 0.05, (obj, coverage)


def assert_colour(name: str, hsv: tuple[float, float, float]) -> None:
    hue, sat, val = hsv
    if name == "white":
        assert sat < 0.12 and val > 0.85, hsv
    elif name == "black":
        assert val < 0.2, hsv
    else:
        low, high = COLOUR_RANGES[name].hue
        hue = hue - 360 if hue > 300 and name == "red" else hue
        assert low - 4 <= hue <= high + 4 and sat > 0.45, (name, hsv)


@pytest.mark.parametrize("style", STYLES)
def test_two_shapes_keep_their_stated_sides(style: str) -> None:
    drawn = [
        s
        for s in scenes(400, seed=7, two_shapes=1.0)
        if (s.objects[0]["position"], s.objects[1]["position"]) in OPPOSITE
        and s.objects[0]["colour"] != s.objects[1]["colour"]
    ][:20]
    for i, scene in enumerate(drawn):
        image = render_scene(scene, np.random.default_rng(i), style=style, clean=True)
        mask = foreground(image, image.getpixel((0, 0)))  # type: ignore[arg-type]
        pixels = np.asarray(image, dtype=np.float32)
        refs = np.array([prototype(o["colour"]) for o in scene.objects], dtype=np.float32)
        nearest = np.argmin(((pixels[..., None, :] - refs) ** 2).sum(axis=-1), axis=-1)
        first, second = (centroid(mask & (nearest == k)) for k in (0, 1))
        axis = 0 if scene.objects[0]["position"] in ("left", "right") else 1
        first_is_lower = scene.objects[0]["position"] in ("left", "top")
        assert (first[axis] < second[axis]) == first_is_lower, (scene.objects, first, second)


@pytest.mark.parametrize("edge", [False, True])
def test_two_shapes_do_not_overlap(edge: bool) -> None:
    for i, scene in enumerate(scenes(300, seed=11, two_shapes=1.0)):
        first, second = place_shapes(scene.objects, 128, 100, np.random.default_rng(i), edge=edge)
        assert separation(first, second) > 0, scene.objects


def test_train_and_shifted_renders_of_one_scene_differ() -> None:
    for i, scene in enumerate(scenes(10, seed=8)):
        train = render_scene(scene, np.random.default_rng(i), style="train")
        shifted = render_scene(scene, np.random.default_rng(i), style="shifted")
        same_size = train.size == shifted.size
        assert not same_size or not np.array_equal(np.asarray(train), np.asarray(shifted))


def test_rendering_is_deterministic_and_rejects_unknown_styles() -> None:
    scene = scenes(1, seed=9)[0]
    for style in STYLES:
        a = render_scene(scene, np.random.default_rng(5), style=style)
        b = render_scene(scene, np.random.default_rng(5), style=style)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="style"):
        render_scene(scene, np.random.default_rng(0), style="oil")


def test_image_files_decode_to_the_same_size() -> None:
    formats: Counter[str] = Counter()
    image = render_scene(scenes(1, seed=10)[0], np.random.default_rng(0))
    for i in range(30):
        data, mime = image_file_bytes(image, np.random.default_rng(i))
        with Image.open(io.BytesIO(data)) as decoded:
            assert Image.MIME[decoded.format or ""] == mime
            assert decoded.size == image.size
            decoded.convert("RGB").load()
        formats[mime] += 1
    assert set(formats) == {"image/jpeg", "image/png", "image/webp"}
