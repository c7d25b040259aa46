"""The generated world's vocabulary, the Thing/Caption records, the matcher and the parser.

Images and sounds are both described by attribute dicts (``Attrs``), so one matcher,
``describes``, decides whether a caption fits a thing of either modality.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Attrs = Mapping[str, str]

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")

SOUND_KINDS = ("tone", "chirp", "noise", "beeps", "chord")
PITCHES = ("low", "high")
DIRECTIONS = ("rising", "falling")
COUNTS = ("two", "three")

# The phrases a caption uses for a position; the parser needs only the last word.
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

# Every word a generated caption can contain: the tokenizer's table can stay this small.
IMAGE_WORDS = frozenset(
    {*SHAPES, *COLOURS, *POSITIONS, *SIZES, "big"}
    | {"a", "an", "the", "and", "on", "in", "at", "of", "with", "picture", "image"}
)
SOUND_WORDS = frozenset(
    {"tone", "chirp", "noise", "white", "beeps", "chord", *PITCHES, *DIRECTIONS, *COUNTS}
    | {"a", "the", "of", "sound", "pitched"}
)
WORDS: tuple[str, ...] = tuple(sorted(IMAGE_WORDS | SOUND_WORDS))

# Query words the generator never writes but a user may type; mapped onto the vocabulary.
_SYNONYMS = {
    "big": "large",
    "centre": "center",
    "middle": "center",
    "beep": "beeps",
    "tones": "tone",
    "chirps": "chirp",
    "chords": "chord",
    "2": "two",
    "3": "three",
}
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Thing:
    """A scene (one or two shapes) or a sound (one object), with full attributes."""

    objects: tuple[Attrs, ...]


@dataclass(frozen=True)
class Caption:
    """A caption's text and the attributes it states, one dict per mentioned object."""

    text: str
    mentions: tuple[Attrs, ...]


def describes(mentions: Sequence[Attrs], objects: Sequence[Attrs]) -> bool:
    """True when each mention can be matched to a distinct object with every stated attribute."""
    return _assign(list(mentions), list(objects), used=frozenset())


def _assign(mentions: list[Attrs], objects: list[Attrs], used: frozenset[int]) -> bool:
    if not mentions:
        return True
    first, rest = mentions[0], mentions[1:]
    for i, obj in enumerate(objects):
        fits = all(obj.get(key) == value for key, value in first.items())
        if i not in used and fits and _assign(rest, objects, used | {i}):
            return True
    return False


def parse_caption(text: str) -> Caption:
    """Read the mentions back out of a caption or a simple query; unknown words are ignored."""
    tokens = [_SYNONYMS.get(t, t) for t in _TOKEN.findall(text.lower())]
    mentions = [m for segment in _segments(tokens) if (m := _parse_segment(segment))]
    return Caption(text=text, mentions=tuple(mentions))


def _segments(tokens: list[str]) -> list[list[str]]:
    """Split at "and": the generator joins objects with it and never uses it inside one."""
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token == "and":
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def _parse_segment(tokens: list[str]) -> dict[str, str]:
    kinds = [t for t in tokens if t in SOUND_KINDS]
    if kinds:
        return _parse_sound(kinds[0], set(tokens))
    return _parse_shape(tokens)


def _parse_sound(kind: str, words: set[str]) -> dict[str, str]:
    attrs = {"kind": kind}
    if kind in ("tone", "beeps"):
        attrs.update(_first("pitch", PITCHES, words))
    if kind == "chirp":
        attrs.update(_first("direction", DIRECTIONS, words))
    if kind == "beeps":
        attrs.update(_first("count", COUNTS, words))
    return attrs


def _parse_shape(tokens: list[str]) -> dict[str, str]:
    words = set(tokens)
    attrs: dict[str, str] = {}
    for key, values in (
        ("size", SIZES),
        ("colour", COLOURS),
        ("shape", SHAPES),
        ("position", POSITIONS),
    ):
        attrs.update(_first(key, values, words))
    return attrs


def _first(key: str, values: Sequence[str], words: set[str]) -> dict[str, str]:
    """{key: the first of values present in words}, or {} when none is."""
    for value in values:
        if value in words:
            return {key: value}
    return {}
