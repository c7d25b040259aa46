"""Invented languages for the world's image captions: every word a caption can hold replaced
by a made-up one, a different language for every seed.

Like :mod:`models.synth.world.french`, this exists to test teaching mmr-mini a vocabulary it
never saw, without leaning on one language's spelling: an invented word shares no pieces
with the English one it stands for, so everything the fine-tune achieves it learnt from the
pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.synth.world.vocabulary import IMAGE_WORDS

_SYLLABLES = (
    "ka", "lo", "mi", "zu", "re", "ta", "vo", "shi", "ne", "pa", "gu", "da", "fe", "ri",
    "mo", "ba", "xe", "lu", "qi", "tor", "nan", "vel", "sor", "dum",
)  # fmt: skip


def invented_words(seed: int) -> dict[str, str]:
    """English word -> invented word, for every word of the world's image captions; no
    invented word is an English word of the world or another invented word."""
    rng = np.random.default_rng([seed, 5])
    words: dict[str, str] = {}
    for word in sorted(IMAGE_WORDS):
        while True:
            made = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if made not in IMAGE_WORDS and made not in words.values():
                words[word] = made
                break
    return words


def translator(seed: int) -> Callable[[str], str]:
    """A caption's rendering in the seed's invented language, word for word."""
    words = invented_words(seed)

    def translate(caption: str) -> str:
        return " ".join(words.get(word, word) for word in caption.split())

    return translate
