"""The one training loop: epochs of batches, one optimiser step per batch, and the rules that
end it. The aligner bootstrap, the aligner fine-tune and mmr-mini's trainer all run it.

Every collaborator is passed in, so each is a small module tested alone:

- ``batches`` (:mod:`models.training.batches`): what one epoch's batches are;
- ``objective``: the loss of one batch (:class:`StepLoss`);
- ``stepper`` (:mod:`models.training.optimiser`): the optimiser and its learning-rate schedule;
- ``early_stop`` (:mod:`models.training.early_stop`): the held-out validation after every
  epoch, the best state kept, patience;
- ``budget`` (:mod:`models.training.budget`): the deadline and its clock;
- ``should_stop``, ``on_epoch``, ``on_step``: cancel, progress and logging callbacks.

Before every step it asks ``should_stop`` (then raises :class:`Cancelled`) and the budget;
after every epoch it validates, reports progress, then stops if patience ran out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from models.training.batches import Batches
from models.training.budget import Budget
from models.training.early_stop import EarlyStop
from models.training.optimiser import Stepper

B = TypeVar("B")
# (stage, done, total): how far a long run is, told to whoever runs it (the command line
# shows it as a bar or as plain lines, app.progress).
Progress = Callable[[str, int, int], None]


class Cancelled(Exception):
    """``should_stop`` asked training to end; nothing is returned."""


@dataclass(frozen=True)
class StepLoss:
    """One batch's loss: what the step minimises, and what progress reports (the fit alone,
    without regularisers)."""

    minimise: torch.Tensor
    report: torch.Tensor


@dataclass(frozen=True)
class EpochEnd:
    """Sent after every epoch: epochs done, the mean reported loss, seconds since the start."""

    epoch: int
    loss: float
    elapsed: float


@dataclass(frozen=True)
class Outcome:
    """Epochs completed and why training stopped: patience, max_epochs or max_seconds."""

    epochs: int
    stopped: str


def train_epochs(
    *,
    batches: Batches[B],
    objective: Callable[[B], StepLoss],
    stepper: Stepper,
    max_epochs: int,
    budget: Budget,
    early_stop: EarlyStop[Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochEnd], None] | None = None,
    on_step: Callable[[int, StepLoss], None] | None = None,
) -> Outcome:
    """Train until ``max_epochs``, the budget or patience ends it; the best state, when
    validated, is ``early_stop.best``. Raises :class:`Cancelled` when ``should_stop()``."""
    for epoch in range(1, max_epochs + 1):
        reported = []
        for batch in batches.epoch():
            if should_stop is not None and should_stop():
                raise Cancelled("training cancelled")
            if budget.expired():
                return Outcome(epoch - 1, "max_seconds")
            loss = objective(batch)
            stepper.update(loss.minimise)
            reported.append(loss.report.item())
            if on_step is not None:
                on_step(stepper.steps - 1, loss)
        patience_ran_out = early_stop is not None and early_stop.after_epoch()
        if on_epoch is not None:
            on_epoch(EpochEnd(epoch, float(np.mean(reported)), budget.elapsed()))
        if patience_ran_out:
            return Outcome(epoch, "patience")
    return Outcome(max_epochs, "max_epochs")
