"""Hybrid's fusion (app/services/search.py): the lexical weight from the specificity of the
query's rarest word, and the blend of the two sides' scores, on their edges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.schemas.search import MAX_LEXICAL_WEIGHT
from app.services.search import Ranked, blend, lexical_weight


def test_the_weight_grows_with_the_square_of_the_specificity() -> None:
    assert lexical_weight(0.0) == 0.0
    assert lexical_weight(1.0) == MAX_LEXICAL_WEIGHT == 0.9
    assert lexical_weight(0.5) == pytest.approx(0.9 * 0.25)
    assert lexical_weight(0.25) < lexical_weight(0.5) < lexical_weight(0.75)


@pytest.mark.parametrize(
    ("given_", "expected"),
    [(math.nan, 0.0), (-0.5, 0.0), (math.inf, 0.9), (-math.inf, 0.0), (3.0, 0.9)],
)
def test_the_weight_holds_odd_specificities_to_its_range(given_: float, expected: float) -> None:
    assert lexical_weight(given_) == expected


def test_no_lexical_match_keeps_the_vector_order() -> None:
    vector = [Ranked(3, 0.9, 1), Ranked(1, 0.5), Ranked(2, -0.2)]
    fused = blend(vector, {}, lexical_weight(0.0))
    assert [(h.pk, h.score, h.segment) for h in fused] == [(3, 0.9, 1), (1, 0.5, 0), (2, -0.2, 0)]
    # whatever the weight: every item is scaled alike
    assert [h.pk for h in blend(vector, {}, 0.6)] == [3, 1, 2]


def test_lexical_only_candidates_count_a_cosine_of_0() -> None:
    fused = blend([Ranked(1, 0.5)], {2: 0.8, 1: 0.1}, 0.5)
    assert [(h.pk, h.segment) for h in fused] == [(2, 0), (1, 0)]
    assert fused[0].score == pytest.approx(0.4)
    assert fused[1].score == pytest.approx(0.5 * 0.5 + 0.5 * 0.1)
    only = blend([], {7: 0.3, 5: 0.6}, 0.9)
    assert [(h.pk, h.score) for h in only] == [(5, pytest.approx(0.54)), (7, pytest.approx(0.27))]


def test_a_specific_word_puts_its_match_over_a_closer_cosine() -> None:
    vector = [Ranked(1, 0.95), Ranked(2, 0.60)]
    lexical = {1: 0.70, 2: 0.92}  # 2 holds the code: more relevance
    assert [h.pk for h in blend(vector, lexical, lexical_weight(1.0))] == [2, 1]
    assert [h.pk for h in blend(vector, lexical, lexical_weight(0.25))] == [1, 2]


def test_ties_go_to_the_older_item() -> None:
    fused = blend([Ranked(9, 0.5), Ranked(4, 0.5)], {9: 0.2, 4: 0.2, 6: 0.7}, 0.0)
    assert [h.pk for h in fused] == [4, 9, 6]
    assert fused[0].score == fused[1].score


scores = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_subnormal=False)
lexical_scores = st.floats(
    min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False, allow_subnormal=False
)


@given(
    st.dictionaries(st.integers(0, 50), scores, max_size=20),
    st.dictionaries(st.integers(0, 50), lexical_scores, max_size=20),
    st.one_of(st.floats(allow_subnormal=False), st.just(math.nan)),
)
def test_every_item_once_finite_in_range_and_best_first(
    cosines: dict[int, float], lexical: dict[int, float], specificity: float
) -> None:
    weight = lexical_weight(specificity)
    assert 0.0 <= weight <= MAX_LEXICAL_WEIGHT
    fused = blend([Ranked(pk, s) for pk, s in cosines.items()], lexical, weight)
    assert sorted(h.pk for h in fused) == sorted(cosines.keys() | lexical.keys())
    assert all(math.isfinite(h.score) and -1.0 <= h.score <= 1.0 for h in fused)
    assert [(-h.score, h.pk) for h in fused] == sorted((-h.score, h.pk) for h in fused)
