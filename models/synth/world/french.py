"""French renderings of the world's image captions.

This exists to test fine-tuning on a vocabulary mmr-mini never saw: the model was trained on
English captions only, so "un grand cercle rouge à gauche" reaches its text tower as unseen
tokens. A fine-tune on (French caption, image) pairs has to teach the new words, and the same
images' English captions tell whether it forgot the old ones.

All three nouns (cercle, carré, triangle) are masculine, so articles and adjectives take the
masculine form; sizes stand before the noun, colours after it, as French orders them.
"""

from __future__ import annotations

import re

PREFIXES = {
    "a picture of ": "une photo de ",
    "an image of ": "une image de ",
    "a picture with ": "une photo avec ",
    "an image with ": "une image avec ",
}
ARTICLES = {"a": "un", "an": "un", "the": "le"}
SIZES = {"small": "petit", "large": "grand", "big": "grand"}
COLOURS = {
    "red": "rouge",
    "green": "vert",
    "blue": "bleu",
    "yellow": "jaune",
    "purple": "violet",
    "orange": "orange",
    "white": "blanc",
    "black": "noir",
}
SHAPES = {"circle": "cercle", "square": "carré", "triangle": "triangle"}
POSITIONS = {
    "on the left": "à gauche",
    "on the right": "à droite",
    "at the top": "en haut",
    "at the bottom": "en bas",
    "in the center": "au centre",
}
# "de un" and "de le" contract in French: "une image d'un cercle", "une photo du carré".
_CONTRACTIONS = (("de un ", "d'un "), ("de le ", "du "))


def _alternatives(words: dict[str, str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PHRASE = re.compile(
    rf"(?:(?P<before>{_alternatives(POSITIONS)}) )?"
    rf"(?:(?P<article>{_alternatives(ARTICLES)}) )?"
    rf"(?:(?P<size>{_alternatives(SIZES)}) )?"
    rf"(?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf"(?: (?P<after>{_alternatives(POSITIONS)}))?"
)


def to_french(caption_text: str) -> str:
    """The French of a caption written by :func:`models.synth.world.images.caption_scene`.

    "a picture of a large red circle on the left and the small blue square" becomes
    "une photo d'un grand cercle rouge à gauche et le petit carré bleu". Raises ValueError
    for text the caption generator cannot have written.
    """
    text = caption_text.strip()
    prefix = next((p for p in PREFIXES if text.startswith(p)), "")
    phrases = [_phrase(part, caption_text) for part in text[len(prefix) :].split(" and ")]
    out = PREFIXES.get(prefix, "") + " et ".join(phrases)
    for long, short in _CONTRACTIONS:  # only a prefix writes "de"
        out = out.replace(long, short)
    return out


def _phrase(english: str, caption_text: str) -> str:
    """One object's phrase: [position] [article] [size] noun colour [position]."""
    match = _PHRASE.fullmatch(english)
    if match is None:
        raise ValueError(f"not a caption of the generated world: {caption_text!r}")
    parts = match.groupdict()
    words = [
        POSITIONS.get(parts["before"] or ""),
        ARTICLES.get(parts["article"] or ""),
        SIZES.get(parts["size"] or ""),
        SHAPES[parts["shape"]],
        COLOURS[parts["colour"]],
        POSITIONS.get(parts["after"] or ""),
    ]
    return " ".join(w for w in words if w)
