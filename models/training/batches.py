"""Where a trainer's batches come from, one epoch at a time."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

B_co = TypeVar("B_co", covariant=True)


class Batches(Protocol[B_co]):
    """An epoch's batches, and how many there are (the schedule counts steps with it)."""

    @property
    def per_epoch(self) -> int: ...

    def epoch(self) -> Iterable[B_co]: ...


@dataclass(frozen=True)
class ShuffledChunks:
    """Row indices ``0..rows-1``, reshuffled every epoch and cut into chunks of near-equal size.

    Equal-sized chunks, not batches of ``batch`` and a remainder: a trailing batch of one row
    has a contrastive loss of exactly zero. ``generator`` may be shared with the objective
    (the fine-tune draws its anchors from it); the draws then interleave as they always did.
    """

    rows: int
    batch: int
    generator: torch.Generator

    @property
    def per_epoch(self) -> int:
        return max(1, math.ceil(self.rows / self.batch))

    def epoch(self) -> tuple[torch.Tensor, ...]:
        order = torch.randperm(self.rows, generator=self.generator)
        return order.tensor_split(self.per_epoch)


@dataclass(frozen=True)
class Steps:
    """``count`` steps as one epoch, each batch its step number: for an objective that draws
    its own examples (mmr-mini samples from generated pools)."""

    count: int

    @property
    def per_epoch(self) -> int:
        return self.count

    def epoch(self) -> range:
        return range(self.count)
