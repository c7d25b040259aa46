"""mmr eval: recall@k with look-alikes counted as correct, and the command's table."""

from __future__ import annotations

import numpy as np
import pytest

from app.cli import main
from models.synth.world.vocabulary import Caption, Thing, parse_caption
from models.training.evaluate import recall_at, relevance


def test_recall_counts_a_query_once_any_relevant_item_is_in_the_top_k() -> None:
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    relevant = np.array([[False, True, False], [True, False, False]])
    assert recall_at(scores, relevant, ks=(1, 2, 3)) == {1: 0.0, 2: 0.5, 3: 1.0}


def test_look_alikes_are_relevant() -> None:
    red = Thing(
        objects=({"shape": "circle", "colour": "red", "size": "small", "position": "left"},)
    )
    blue = Thing(
        objects=({"shape": "circle", "colour": "blue", "size": "small", "position": "left"},)
    )
    captions: list[Caption] = [parse_caption("a red circle"), parse_caption("a small circle")]
    assert relevance(captions, [red, blue]).tolist() == [[True, False], [True, True]]


@pytest.mark.slow
def test_eval_prints_recall_for_every_direction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "mmr-mini", "--pairs", "24"]) == 0
    out = capsys.readouterr().out
    for direction in ("text->image", "image->text", "text->audio", "audio->text"):
        assert out.count(direction) >= 2, out  # both sets
    assert "two shapes" in out and "shifted" in out and "held-out" in out
