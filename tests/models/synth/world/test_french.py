"""to_french: every generated caption has a French rendering in French word order."""

from __future__ import annotations

import pytest

from models.synth.world.french import COLOURS, POSITIONS, SHAPES, to_french
from models.synth.world.pairs import image_pairs
from models.synth.world.vocabulary import WORDS


@pytest.mark.parametrize(
    ("english", "french"),
    [
        ("red circle", "cercle rouge"),
        ("a large red circle on the left", "un grand cercle rouge à gauche"),
        ("the small purple square at the top", "le petit carré violet en haut"),
        ("in the center a big white triangle", "au centre un grand triangle blanc"),
        ("a picture of a black square", "une photo d'un carré noir"),
        ("an image of the small red square", "une image du petit carré rouge"),
        (
            "an image with a green circle at the bottom and a blue square on the right",
            "une image avec un cercle vert en bas et un carré bleu à droite",
        ),
    ],
)
def test_known_captions(english: str, french: str) -> None:
    assert to_french(english) == french


def test_every_generated_caption_translates_without_english_words() -> None:
    # "orange", "triangle" and "image" are the same word in both languages; nothing else is.
    shared = {"orange", "triangle", "image"}
    for pair in image_pairs(400, seed=7):
        french = to_french(pair.caption.text)
        leftover = set(french.replace("d'", " ").split()) & (set(WORDS) - shared)
        assert not leftover, (pair.caption.text, french)
        for mention in pair.caption.mentions:
            assert SHAPES[mention["shape"]] in french
            assert COLOURS[mention["colour"]] in french


def test_positions_cover_the_vocabulary() -> None:
    assert len(POSITIONS) == 5 and len(set(POSITIONS.values())) == 5


@pytest.mark.parametrize("text", ["", "a red", "a dog on the left", "red circle and"])
def test_text_the_generator_cannot_write_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a caption"):
        to_french(text)
