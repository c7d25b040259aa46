"""The held-out metric: split, recall both ways, and the score early stopping compares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.encoders.aligner import l2_normalize
from models.training.evaluate import recall_at
from models.training.validation import Score, held_out_score, pair_recall, split_pairs


def test_pair_recall_agrees_with_recall_at() -> None:
    rng = np.random.default_rng(6)
    a = l2_normalize(rng.standard_normal((60, 8)))
    b = l2_normalize(a + rng.standard_normal((60, 8)))
    got = pair_recall(a, b)
    forward = recall_at(a @ b.T, np.eye(60, dtype=bool))
    back = recall_at(b @ a.T, np.eye(60, dtype=bool))
    assert got == {f"source_to_target@{k}": v for k, v in forward.items()} | {
        f"target_to_source@{k}": v for k, v in back.items()
    }


def test_split_is_seeded_disjoint_and_keeps_two_rows_on_each_side() -> None:
    train, held = split_pairs(50, 0.1, seed=4)
    assert (len(train), len(held)) == (45, 5) and not set(train) & set(held)
    assert [a.tolist() for a in split_pairs(50, 0.1, seed=4)] == [train.tolist(), held.tolist()]
    assert [len(s) for s in split_pairs(10, 0.01, seed=0)] == [8, 2]
    with pytest.raises(ValueError, match="holdout"):
        split_pairs(50, 1.0, seed=0)


def test_a_higher_recall_wins_and_a_clearly_lower_loss_breaks_a_tie() -> None:
    assert Score(0.6, 9.0).beats(Score(0.5, 1.0))
    assert not Score(0.5, 1.0).beats(Score(0.6, 9.0))
    # Small held-out sets saturate recall: then the loss decides, by more than 0.1 %.
    assert Score(1.0, 0.99).beats(Score(1.0, 1.0))
    assert not Score(1.0, 0.9995).beats(Score(1.0, 1.0))
    assert not Score(1.0, 1.0).beats(Score(1.0, 1.0))


def test_held_out_score_is_mean_recall_and_the_fixed_temperature_loss() -> None:
    rows = torch.from_numpy(l2_normalize(np.random.default_rng(0).standard_normal((20, 8))))
    matched = held_out_score(rows, rows)
    shuffled = held_out_score(rows, rows.roll(1, dims=0))
    assert matched.recall == 1.0 and shuffled.recall < 0.6
    assert matched.loss < shuffled.loss
