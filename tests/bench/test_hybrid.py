"""bench/hybrid.py: the generated sets hold what they claim, and the measures are right."""

from __future__ import annotations

import pytest

from bench.hybrid import HybridConfig, exact_sets, meaning_set, rrf, score

CFG = HybridConfig(items=300, queries=50)


def test_exact_queries_name_one_item_by_a_token_no_other_holds() -> None:
    exact, alone = exact_sets(CFG)
    assert len(exact.items) == 300 and len(exact.queries) == len(alone.queries) == 50
    for (text, relevant), (code, same) in zip(exact.queries, alone.queries, strict=True):
        assert relevant == same and len(relevant) == 1
        assert text.startswith(code + " ")
        holders = [i for i, t in exact.items.items() if code in t.split()]
        assert holders == list(relevant)


def test_meaning_queries_are_other_words_for_the_same_scenes() -> None:
    case = meaning_set(CFG)
    texts = set(case.items.values())
    assert all(relevant for _, relevant in case.queries)
    assert sum(text not in texts for text, _ in case.queries) > len(case.queries) // 2


def test_recall_and_reciprocal_rank() -> None:
    assert score(["a", "b", "c"], {"b"}) == (1.0, 0.5)
    assert score(["a"] * 10 + ["b"], {"b"}) == (0.0, 0.0)
    assert score(["x", "a", "b"], {"a", "b", "c"}) == pytest.approx((2 / 3, 0.5))


def test_reciprocal_rank_fusion() -> None:
    # b: 1/61 + 1/62 beats a's 1/61 + 1/63
    assert rrf([["a", "b"], ["b", "c", "a"]], 60) == ["b", "a", "c"]
