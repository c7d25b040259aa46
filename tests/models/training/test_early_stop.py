"""Early stopping by patience: the best held-out state is kept and handed back."""

from __future__ import annotations

from dataclasses import dataclass

from models.training.early_stop import EarlyStop
from models.training.validation import Score


@dataclass(frozen=True)
class State:
    name: str
    score: Score


def scripted(*recalls: float) -> tuple[State, list[State]]:
    """A start state and the states later validations return, in order."""
    start, *later = (State(f"s{i}", Score(r, 1.0)) for i, r in enumerate(recalls))
    return start, later


def test_patience_ends_after_that_many_validations_without_a_better_state() -> None:
    start, later = scripted(0.4, 0.5, 0.7, 0.6, 0.7, 0.65)
    states = iter(later)
    stop = EarlyStop(start, validate=lambda: next(states), patience=3)
    verdicts = [stop.after_epoch() for _ in range(5)]
    assert verdicts == [False, False, False, False, True]
    assert stop.best.name == "s2" and stop.stale == 3  # an equal score is no improvement


def test_a_better_state_resets_the_count() -> None:
    start, later = scripted(0.4, 0.3, 0.3, 0.5, 0.4)
    states = iter(later)
    stop = EarlyStop(start, validate=lambda: next(states), patience=3)
    assert [stop.after_epoch() for _ in range(4)] == [False, False, False, False]
    assert stop.best.name == "s3" and stop.stale == 1


def test_the_start_is_kept_when_nothing_beats_it() -> None:
    start, later = scripted(0.9, 0.1)
    stop = EarlyStop(start, validate=lambda: later[0], patience=1)
    assert stop.after_epoch() is True and stop.best is start
