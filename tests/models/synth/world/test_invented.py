"""Invented languages: every caption word replaced, one language per seed."""

from __future__ import annotations

import numpy as np

from models.synth.world.images import caption_scene, sample_scene
from models.synth.world.invented import invented_words, translator
from models.synth.world.vocabulary import IMAGE_WORDS


def test_every_word_of_a_caption_is_replaced_by_its_own_invented_word() -> None:
    words = invented_words(0)
    assert set(words) == set(IMAGE_WORDS)
    assert len(set(words.values())) == len(words)  # one word each: nothing is conflated
    assert not set(words.values()) & IMAGE_WORDS
    translate = translator(0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        english = caption_scene(sample_scene(rng), rng).text
        invented = translate(english).split()
        assert len(invented) == len(english.split())
        assert not set(invented) & IMAGE_WORDS
    assert invented_words(0) == invented_words(0) != invented_words(1)
