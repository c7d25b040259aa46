"""The optimiser step: one update per batch at the learning rate the schedule gives that step."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from models.training.contrastive import cosine_lr

Schedule = Callable[[int], float]


def epoch_schedule(lr: float, *, epochs: int, per_epoch: int) -> Schedule:
    """One epoch of linear warm-up to ``lr``, then cosine decay to a tenth of it."""
    return functools.partial(
        cosine_lr, total=epochs * per_epoch, warmup=per_epoch, peak=lr, floor=lr / 10
    )


class Stepper:
    """Applies a loss to the parameters: the scheduled rate, fresh gradients, one step."""

    def __init__(self, optimiser: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.optimiser, self.schedule = optimiser, schedule
        self.steps = 0

    @classmethod
    def adamw(cls, groups: list[dict[str, Any]], *, lr: float, schedule: Schedule) -> Stepper:
        """AdamW over parameter groups that each name their own ``weight_decay``."""
        return cls(torch.optim.AdamW(groups, lr=lr), schedule)

    def update(self, loss: torch.Tensor) -> None:
        """One optimiser step down ``loss`` at ``schedule(steps)``."""
        lr = self.schedule(self.steps)
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.steps += 1
