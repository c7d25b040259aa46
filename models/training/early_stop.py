"""Early stopping by patience: validate after every epoch, keep the best state, stop once
``patience`` validations in a row brought nothing better. The best state is what a trainer
returns, so training never hands back worse than its start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from models.training.validation import Score


class Scored(Protocol):
    """A snapshot of what is trained, with its held-out :class:`Score`."""

    @property
    def score(self) -> Score: ...


S = TypeVar("S", bound=Scored)


class EarlyStop(Generic[S]):
    """The best of ``start`` and every state ``validate`` returns, and the patience left."""

    def __init__(self, start: S, *, validate: Callable[[], S], patience: int) -> None:
        self.best, self.validate, self.patience = start, validate, patience
        self.stale = 0

    def after_epoch(self) -> bool:
        """Validate the current state, keep it if it beats the best; True when patience ran out."""
        now = self.validate()
        if now.score.beats(self.best.score):
            self.best, self.stale = now, 0
        else:
            self.stale += 1
        return self.stale >= self.patience
