"""The optimiser step: one update per batch at the rate the schedule gives that step."""

from __future__ import annotations

import pytest
import torch

from models.training.optimiser import Stepper, epoch_schedule


def test_the_epoch_schedule_warms_up_over_one_epoch_then_decays_to_a_tenth() -> None:
    schedule = epoch_schedule(1e-2, epochs=10, per_epoch=4)
    assert [schedule(s) for s in range(4)] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    rates = [schedule(s) for s in range(4, 40)]
    assert rates == sorted(rates, reverse=True)
    assert schedule(39) > 1e-3 and schedule(40) == pytest.approx(1e-3)


def test_each_update_takes_the_scheduled_rate_and_fresh_gradients() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    stepper = Stepper(torch.optim.SGD([weight], lr=99.0), schedule=lambda step: 0.1 * (step + 1))
    for _ in range(3):
        stepper.update((2.0 * weight).sum())  # gradient 2 every time: none carried over
    # 1 - 2 * (0.1 + 0.2 + 0.3)
    assert weight.item() == pytest.approx(-0.2)
    assert stepper.steps == 3 and stepper.optimiser.param_groups[0]["lr"] == pytest.approx(0.3)


def test_adamw_keeps_each_groups_weight_decay() -> None:
    decayed, free = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    stepper = Stepper.adamw(
        [{"params": [decayed], "weight_decay": 0.5}, {"params": [free], "weight_decay": 0.0}],
        lr=0.1,
        schedule=lambda step: 0.1,
    )
    assert isinstance(stepper.optimiser, torch.optim.AdamW)
    assert [g["weight_decay"] for g in stepper.optimiser.param_groups] == [0.5, 0.0]
    stepper.update((0.0 * decayed + 0.0 * free).sum())  # no gradient: only the decay moves
    assert decayed[0].item() == pytest.approx(1.0 - 0.1 * 0.5)
    assert free[0].item() == pytest.approx(1.0)
