"""Scenes of one or two coloured shapes: sampling, captions, rendering and file encoding."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.synth.world.render_shifted import render_shifted
from models.synth.world.render_train import render_train
from models.synth.world.vocabulary import (
    COLOURS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    Attrs,
    Caption,
    Thing,
)

Renderer = Callable[..., Image.Image]
RENDERERS: dict[str, Renderer] = {"train": render_train, "shifted": render_shifted}
DETAILS = ("random", "full", "minimal")

# Two large shapes only fit side by side when they sit on opposite sides.
_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
_PREFIXES = ("", "a picture of ", "an image of ", "a picture with ", "an image with ")
_PREFIX_WEIGHTS = (0.55, 0.15, 0.1, 0.1, 0.1)
_ARTICLES = ("a", "the", "")
_ARTICLE_WEIGHTS = (0.55, 0.15, 0.3)


@dataclass(frozen=True)
class Scene(Thing):
    """One or two shapes, each with shape, colour, size and position."""


def sample_scene(rng: np.random.Generator, *, two_shapes: float = 0.35) -> Scene:
    """One shape, or with probability two_shapes two that differ in place and in look."""
    first = _random_shape(rng)
    if rng.random() >= two_shapes:
        return Scene(objects=(first,))
    while True:
        second = _random_shape(rng)
        if _compatible(first, second):
            return Scene(objects=(first, second))


def _random_shape(rng: np.random.Generator) -> dict[str, str]:
    return {
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "colour": COLOURS[rng.integers(len(COLOURS))],
        "size": SIZES[rng.integers(len(SIZES))],
        "position": POSITIONS[rng.integers(len(POSITIONS))],
    }


# What a sibling changes, and how often: colour is the easy cue, so it is varied least.
_VARIED = ("shape", "position", "size", "colour")
_VARIED_WEIGHTS = (0.35, 0.35, 0.2, 0.1)
_VALUES = {"shape": SHAPES, "colour": COLOURS, "position": POSITIONS, "size": SIZES}


def vary_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """A sibling scene that differs from scene in one attribute of one object.

    Training batches hold scenes with their siblings: a model can then no longer tell
    captions apart by colour alone and has to learn shape, position and size.
    """
    while True:
        which = int(rng.integers(len(scene.objects)))
        key = _VARIED[rng.choice(len(_VARIED), p=_VARIED_WEIGHTS)]
        choices = [v for v in _VALUES[key] if v != scene.objects[which][key]]
        changed = dict(scene.objects[which]) | {key: choices[rng.integers(len(choices))]}
        objects = [*scene.objects]
        objects[which] = changed
        if len(objects) == 1 or _compatible(objects[0], objects[1]):
            return Scene(objects=tuple(objects))


def _compatible(a: Attrs, b: Attrs) -> bool:
    if a["position"] == b["position"]:
        return False
    if (a["shape"], a["colour"]) == (b["shape"], b["colour"]):
        return False
    both_large = a["size"] == b["size"] == "large"
    return not both_large or _OPPOSITE.get(a["position"]) == b["position"]


def caption_scene(scene: Thing, rng: np.random.Generator, *, detail: str = "random") -> Caption:
    """A caption naming every object's colour and shape; size and position as detail says."""
    say_size, say_position = _detail_flags(rng, detail)
    prefix = _PREFIXES[rng.choice(len(_PREFIXES), p=_PREFIX_WEIGHTS)]
    article = _ARTICLES[rng.choice(len(_ARTICLES), p=_ARTICLE_WEIGHTS)]
    if prefix and not article:  # "a picture of red circle" reads wrong
        article = "a"
    large_word = "big" if rng.random() < 0.25 else "large"
    # "on the left a red circle"; never after a prefix ("a picture of on the left ..." reads wrong)
    position_first = say_position and not prefix and rng.random() < 0.2
    order = rng.permutation(len(scene.objects))
    phrases, mentions = [], []
    for obj in (scene.objects[i] for i in order):
        mention = {"colour": obj["colour"], "shape": obj["shape"]}
        words = [obj["colour"], obj["shape"]]
        if say_size:
            mention["size"] = obj["size"]
            words.insert(0, large_word if obj["size"] == "large" else obj["size"])
        if article:
            words.insert(0, _article(article, words[0]))
        if say_position:
            mention["position"] = obj["position"]
            place = POSITION_PHRASES[obj["position"]]
            words = [place, *words] if position_first else [*words, place]
        phrases.append(" ".join(words))
        mentions.append(mention)
    return Caption(text=prefix + " and ".join(phrases), mentions=tuple(mentions))


def _detail_flags(rng: np.random.Generator, detail: str) -> tuple[bool, bool]:
    """(say size, say position) for the whole caption."""
    if detail == "full":
        return True, True
    if detail == "minimal":
        return False, False
    if detail == "random":
        return bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    raise ValueError(f"detail must be one of {DETAILS}, not {detail!r}")


def _article(article: str, next_word: str) -> str:
    if article == "a" and next_word[0] in "aeiou":
        return "an"
    return article


def render_scene(
    scene: Thing, rng: np.random.Generator, *, style: str = "train", clean: bool = False
) -> Image.Image:
    """An RGB rendering of scene; rng draws every nuisance. clean: plain background, no codec."""
    try:
        renderer = RENDERERS[style]
    except KeyError:
        raise ValueError(f"style must be one of {tuple(RENDERERS)}, not {style!r}") from None
    return renderer(scene.objects, rng, clean=clean)


def image_file_bytes(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """The image encoded as JPEG, PNG or WebP (drawn from rng), and its MIME type."""
    buffer = io.BytesIO()
    pick = rng.random()
    if pick < 0.5:
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
        return buffer.getvalue(), "image/jpeg"
    if pick < 0.8:
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    lossless = bool(rng.random() < 0.3)
    image.save(buffer, format="WEBP", quality=int(rng.integers(60, 96)), lossless=lossless)
    return buffer.getvalue(), "image/webp"
