"""The training budget: a deadline on a clock the caller passes in."""

from __future__ import annotations

from models.training.budget import Budget


class Clock:
    """A clock that reads whatever the test sets."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_budget_runs_out_only_after_max_seconds_have_passed() -> None:
    clock = Clock()
    budget = Budget.start(2.0, clock=clock)
    assert budget.began == 100.0 and budget.elapsed() == 0.0
    clock.now = 102.0
    assert not budget.expired() and budget.elapsed() == 2.0  # at the deadline: still in time
    clock.now = 102.001
    assert budget.expired()


def test_without_a_limit_the_budget_never_runs_out() -> None:
    clock = Clock()
    budget = Budget.start(clock=clock)
    clock.now = 1e12
    assert not budget.expired() and budget.elapsed() == 1e12 - 100.0
