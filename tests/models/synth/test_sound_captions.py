"""The shipped sound-caption corpus: reproducible, varied, grammatical enough to embed."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from models.synth.captions.phrases import FAMILIES, SOURCES
from models.synth.captions.sound_captions import (
    COMBINATION_TEMPLATES,
    SHIPPED_CAPTIONS,
    SINGLE_TEMPLATES,
    Caption,
    build_caption_records,
    build_sound_captions,
    gerund,
    indefinite_article,
    load_sound_captions,
    third_person,
    write_sound_captions,
)

VOWEL_START_WITH_A = ("uni", "use", "usu", "uk", "one", "eu", "ewe")  # "a unicorn", "a ukulele"
SILENT_H = ("hour", "honest", "heir", "honor")


@cache
def records() -> tuple[Caption, ...]:
    return tuple(build_caption_records())


@cache
def captions() -> tuple[str, ...]:
    return tuple(record.text for record in records())


def test_shipped_file_is_exactly_the_generator_output() -> None:
    assert SHIPPED_CAPTIONS.is_file()
    rerun = "rerun: python -m models.synth.captions.sound_captions"
    assert load_sound_captions() == list(captions()), rerun
    assert SHIPPED_CAPTIONS.read_text(encoding="utf-8") == "\n".join(captions()) + "\n"


def test_three_thousand_distinct_captions() -> None:
    assert len(captions()) == 3000
    assert len(set(captions())) == 3000
    assert build_sound_captions() == list(captions())


def test_generation_is_deterministic_and_seeded() -> None:
    first = build_sound_captions(500, seed=7)
    assert first == build_sound_captions(500, seed=7)
    other = build_sound_captions(500, seed=8)
    assert other != first
    assert len(set(first) & set(other)) < 100
    assert build_sound_captions(200) == list(captions()[:200])  # a prefix of the same stream


def test_records_match_the_captions() -> None:
    assert [r.text for r in records()] == list(captions())
    keys = {source.key for source in SOURCES}
    for record in records():
        assert 1 <= len(record.sources) <= 2
        assert set(record.sources) <= keys
        assert set(record.families) <= set(FAMILIES)
        assert record.template in (*SINGLE_TEMPLATES, *COMBINATION_TEMPLATES)


def test_every_caption_is_short_lower_case_and_unpunctuated() -> None:
    bad = [
        caption
        for caption in captions()
        if not 3 <= len(caption.split()) <= 20
        or caption != caption.lower()
        or caption != caption.strip()
        or "  " in caption
        or not caption[-1].isalpha()  # no trailing period or other punctuation
        or not re.fullmatch(r"[a-z' ,-]+", caption)
    ]
    assert not bad, bad[:10]


def test_articles_agree_with_the_next_word() -> None:
    bad = []
    for caption in captions():
        for article, following in itertools.pairwise(caption.replace(",", "").split()):
            vowel = following[0] in "aeiou"
            if article == "a" and vowel and not following.startswith(VOWEL_START_WITH_A):
                bad.append(caption)
            if article == "an" and not vowel and not following.startswith(SILENT_H):
                bad.append(caption)
    assert not bad, bad[:10]


def _occurs(text: str, phrase: str) -> bool:
    """``phrase`` as whole words in ``text``, not as the tail of "a flock of sheep"."""
    start = text.find(f" {phrase} ")
    while start >= 0:
        if not text[:start].endswith(" of"):
            return True
        start = text.find(f" {phrase} ", start + 1)
    return False


def test_subjects_and_verbs_agree() -> None:
    """No "dogs barks", "rain are", "the horses is", "a dog bark"."""
    text = "\n".join(f" {caption} " for caption in captions())
    bad = []
    for source in SOURCES:
        for noun in source.nouns:
            plural = noun.number == "p"
            for verb in {phrase.split()[0] for phrase in source.verbs}:
                wrong = third_person(verb) if plural else verb
                if _occurs(text, f"{noun.text} {wrong}"):
                    bad.append(f"{noun.text} {wrong}")
            aux = "is" if plural else "are"
            if _occurs(text, f"{noun.text} {aux}"):
                bad.append(f"{noun.text} {aux}")
    assert not bad, bad[:10]


def test_broad_coverage_of_sources_families_and_templates() -> None:
    used = Counter(key for record in records() for key in record.sources)
    assert len(SOURCES) >= 150
    assert len(used) >= 120
    families = Counter(family for record in records() for family in record.families)
    assert set(families) == set(FAMILIES)
    assert min(families.values()) >= 150
    templates = Counter(record.template for record in records())
    assert set(COMBINATION_TEMPLATES) <= set(templates)
    assert sum(templates[t] for t in COMBINATION_TEMPLATES) >= 300
    assert sum(1 for r in records() if len(r.sources) == 2) >= 300
    assert {"gerund", "present", "progressive", "label", "attributive"} <= set(templates)


def test_combinations_read_naturally() -> None:
    text = "\n".join(captions())
    for joiner in (" while ", " followed by ", " in the background", " as ", " and then "):
        assert joiner in text


def test_no_template_or_opening_word_dominates() -> None:
    first_words = Counter(caption.split()[0] for caption in captions())
    word, count = first_words.most_common(1)[0]
    assert count / len(captions()) < 0.35, (word, count)
    templates = Counter(record.template for record in records())
    assert max(templates.values()) / len(captions()) < 0.25
    openings = Counter(" ".join(caption.split()[:2]) for caption in captions())
    assert openings.most_common(1)[0][1] / len(captions()) < 0.05
    assert len({w for caption in captions() for w in caption.split()}) > 1200


def test_vocabulary_is_well_formed() -> None:
    assert len({source.key for source in SOURCES}) == len(SOURCES)
    for source in SOURCES:
        assert source.family in FAMILIES, source.key
        assert source.nouns and source.verbs, source.key
        assert all(noun.number in "spmn" for noun in source.nouns), source.key
    for family in FAMILIES:
        assert sum(source.family == family for source in SOURCES) >= 8, family


@pytest.mark.parametrize(
    ("verb", "third", "ing"),
    [
        ("bark", "barks", "barking"),
        ("buzz", "buzzes", "buzzing"),
        ("screech", "screeches", "screeching"),
        ("cry", "cries", "crying"),
        ("play", "plays", "playing"),
        ("echo", "echoes", "echoing"),
        ("coo", "coos", "cooing"),
        ("hum", "hums", "humming"),
        ("whir", "whirs", "whirring"),
        ("idle", "idles", "idling"),
        ("patter", "patters", "pattering"),
        ("die", "dies", "dying"),
        ("unzip", "unzips", "unzipping"),
        ("have", "has", "having"),
        ("open", "opens", "opening"),
        ("snow", "snows", "snowing"),
    ],
)
def test_conjugation(verb: str, third: str, ing: str) -> None:
    assert third_person(verb) == third
    assert gerund(verb) == ing


@pytest.mark.parametrize(
    ("word", "article"),
    [("engine", "an"), ("dog", "a"), ("old", "an"), ("ukulele", "a"), ("upright", "an")],
)
def test_indefinite_article(word: str, article: str) -> None:
    assert indefinite_article(word) == article


def test_load_skips_blank_lines_and_write_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_text("a dog barking\n\n  rain on a roof  \n\n", encoding="utf-8")
    assert load_sound_captions(path) == ["a dog barking", "rain on a roof"]
    written = write_sound_captions(tmp_path / "out.txt", n=50, seed=3)
    assert load_sound_captions(written) == build_sound_captions(50, seed=3)
