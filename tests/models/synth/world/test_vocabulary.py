"""describes and parse_caption: the matcher and parser every evaluation relies on."""

from __future__ import annotations

import pytest

from models.synth.world.vocabulary import WORDS, describes, parse_caption

RED_CIRCLE = {"shape": "circle", "colour": "red", "size": "small", "position": "left"}
BLUE_SQUARE = {"shape": "square", "colour": "blue", "size": "large", "position": "right"}


def test_a_mention_matches_any_one_object() -> None:
    assert describes([{"colour": "red", "shape": "circle"}], [RED_CIRCLE, BLUE_SQUARE])
    assert describes([{"colour": "blue"}], [RED_CIRCLE, BLUE_SQUARE])


def test_every_stated_attribute_must_match() -> None:
    assert not describes([{"colour": "red", "shape": "square"}], [RED_CIRCLE, BLUE_SQUARE])
    assert not describes([{"colour": "red", "position": "right"}], [RED_CIRCLE, BLUE_SQUARE])


def test_every_mention_needs_its_own_object() -> None:
    two = [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}]
    assert describes(two, [BLUE_SQUARE, RED_CIRCLE])
    assert not describes(two, [RED_CIRCLE])
    twice = [{"colour": "red", "shape": "circle"}, {"colour": "red", "shape": "circle"}]
    assert not describes(twice, [RED_CIRCLE, BLUE_SQUARE])


def test_the_assignment_is_searched_not_greedy() -> None:
    # A greedy match would give the first mention the red circle and leave nothing for the second.
    mentions = [{"colour": "red"}, {"colour": "red", "shape": "circle"}]
    red_square = {"shape": "square", "colour": "red"}
    assert describes(mentions, [RED_CIRCLE, red_square])


def test_no_mentions_describe_anything() -> None:
    assert describes([], [RED_CIRCLE])


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("a red circle", [{"colour": "red", "shape": "circle"}]),
        ("three beeps", [{"kind": "beeps", "count": "three"}]),
        ("a rising chirp", [{"kind": "chirp", "direction": "rising"}]),
        ("two high beeps", [{"kind": "beeps", "count": "two", "pitch": "high"}]),
        ("2 beep", [{"kind": "beeps", "count": "two"}]),
        ("white noise", [{"kind": "noise"}]),
        ("A low pitched tone", [{"kind": "tone", "pitch": "low"}]),
        ("the sound of a chord", [{"kind": "chord"}]),
        (
            "a blue square and a yellow triangle",
            [{"colour": "blue", "shape": "square"}, {"colour": "yellow", "shape": "triangle"}],
        ),
        (
            "a small red circle on the left",
            [{"size": "small", "colour": "red", "shape": "circle", "position": "left"}],
        ),
        (
            "a big white square in the centre",
            [{"size": "large", "colour": "white", "shape": "square", "position": "center"}],
        ),
        ("some red thing, please!", [{"colour": "red"}]),
        ("nothing we know", []),
    ],
)
def test_parse_simple_queries(text: str, mentions: list[dict[str, str]]) -> None:
    caption = parse_caption(text)
    assert caption.text == text
    assert [dict(m) for m in caption.mentions] == mentions


def test_words_are_a_small_sorted_lowercase_table() -> None:
    assert list(WORDS) == sorted(set(WORDS))
    assert all(word.isalpha() and word.islower() for word in WORDS)
    assert len(WORDS) < 60
