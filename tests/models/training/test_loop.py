"""The one training loop, with every collaborator scripted: which rule ends training, when."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from models.training.batches import Steps
from models.training.budget import Budget
from models.training.early_stop import EarlyStop
from models.training.loop import Cancelled, EpochEnd, Outcome, StepLoss, train_epochs
from models.training.optimiser import Stepper
from models.training.validation import Score


@dataclass(frozen=True)
class State:
    epoch: int
    score: Score


class Toy:
    """One parameter, a clock that advances one second per update, scripted held-out scores."""

    def __init__(self, recalls: tuple[float, ...] = (), max_seconds: float = float("inf")) -> None:
        self.weight = torch.nn.Parameter(torch.tensor(0.0))
        self.stepper = Stepper(torch.optim.SGD([self.weight], lr=1.0), schedule=lambda s: 0.01)
        self.now = 0.0
        self.budget = Budget.start(max_seconds, clock=lambda: self.now)
        self.batches: list[int] = []
        self.losses: list[StepLoss] = []
        self.recalls = iter(recalls)
        self.validated = 0
        self.early = EarlyStop(State(0, Score(0.0, 1.0)), validate=self.validate, patience=2)

    def objective(self, batch: int) -> StepLoss:
        self.batches.append(batch)
        self.now += 1.0
        fit = (self.weight - 1.0) ** 2
        self.losses.append(StepLoss(minimise=fit, report=fit.detach() + batch))
        return self.losses[-1]

    def validate(self) -> State:
        self.validated += 1
        return State(self.validated, Score(next(self.recalls), 1.0))

    def run(
        self,
        epochs: int,
        *,
        early: bool = True,
        should_stop: Callable[[], bool] | None = None,
        on_epoch: Callable[[EpochEnd], None] | None = None,
        on_step: Callable[[int, StepLoss], None] | None = None,
    ) -> Outcome:
        return train_epochs(
            batches=Steps(2),
            objective=self.objective,
            stepper=self.stepper,
            max_epochs=epochs,
            budget=self.budget,
            early_stop=self.early if early else None,
            should_stop=should_stop,
            on_epoch=on_epoch,
            on_step=on_step,
        )


def test_every_batch_is_one_update_and_max_epochs_ends_it() -> None:
    toy = Toy()
    assert toy.run(3, early=False) == Outcome(epochs=3, stopped="max_epochs")
    assert toy.batches == [0, 1] * 3 and toy.stepper.steps == 6
    assert toy.weight.item() != 0.0


def test_patience_ends_training_and_the_best_state_is_kept() -> None:
    toy = Toy(recalls=(0.5, 0.8, 0.7, 0.8, 0.9))
    assert toy.run(10) == Outcome(epochs=4, stopped="patience")
    assert toy.early.best.epoch == 2 and toy.validated == 4 and toy.stepper.steps == 8


def test_the_deadline_is_checked_before_every_step() -> None:
    toy = Toy(recalls=(0.5, 0.6), max_seconds=2.5)  # an update takes a second
    assert toy.run(10) == Outcome(epochs=1, stopped="max_seconds")
    assert toy.stepper.steps == 3 and toy.validated == 1  # the second epoch was cut short
    spent = Toy(max_seconds=0.0)
    spent.now = 0.1
    assert spent.run(10) == Outcome(epochs=0, stopped="max_seconds")
    assert spent.stepper.steps == 0 and spent.early.best.epoch == 0


def test_cancel_is_asked_before_every_step_and_nothing_runs_after_it() -> None:
    toy = Toy(recalls=(0.5, 0.6, 0.7))
    asked = iter(range(100))
    with pytest.raises(Cancelled):
        toy.run(10, should_stop=lambda: next(asked) >= 3)
    assert toy.stepper.steps == 3 and toy.validated == 1


def test_progress_follows_every_validation_with_the_epochs_mean_reported_loss() -> None:
    toy = Toy(recalls=(0.5, 0.4, 0.3))
    seen: list[EpochEnd] = []

    def progress(end: EpochEnd) -> None:
        assert toy.validated == end.epoch  # the epoch's validation ran first
        seen.append(end)

    assert toy.run(10, on_epoch=progress) == Outcome(epochs=3, stopped="patience")
    assert [(e.epoch, e.elapsed) for e in seen] == [(1, 2.0), (2, 4.0), (3, 6.0)]
    # report = fit + batch number: the mean over batches 0 and 1 is the mean fit + 0.5
    assert all(e.loss > 0.5 for e in seen) and seen[0].loss > seen[-1].loss


def test_on_step_sees_each_step_number_and_the_objectives_loss() -> None:
    toy = Toy()
    steps: list[tuple[int, StepLoss]] = []
    toy.run(2, early=False, on_step=lambda step, loss: steps.append((step, loss)))
    assert [s for s, _ in steps] == [0, 1, 2, 3]
    assert len(toy.losses) == 4
    assert all(got is made for (_, got), made in zip(steps, toy.losses, strict=True))
