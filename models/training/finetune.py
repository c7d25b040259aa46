"""Fine-tune a collection's aligner heads on its own paired items.

A collection's users pair items of two modalities (a caption and its image, a recording and
its description); :func:`finetune` moves the heads so each pair lands closer together in the
shared space. Heads start from their current affine map and train with symmetric InfoNCE plus
``stay * ||W - W0||^2``: the pull toward the start is what keeps the model's old vocabulary
(English captions still find their images after learning French ones). The training loop
(:mod:`models.training.loop`) keeps the best held-out state, so a fine-tune that cannot help
returns the heads it was given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.encoders.aligner import Aligner, AlignerHead, l2_normalize
from models.training.batches import ShuffledChunks
from models.training.budget import Budget
from models.training.contrastive import INIT_SCALE, MAX_LOGIT_SCALE, contrastive_loss
from models.training.early_stop import EarlyStop
from models.training.loop import Cancelled, EpochEnd, Outcome, StepLoss, train_epochs
from models.training.optimiser import Stepper, epoch_schedule
from models.training.validation import (
    MIN_PAIRS,
    Score,
    held_out_score,
    pair_recall,
    rounded_report,
    split_pairs,
)

__all__ = ["Cancelled", "FinetuneConfig", "FinetuneReport", "Pairs", "Progress", "finetune"]

TRAIN_CHOICES = ("auto", "a", "b", "both")
_DIRECTIONS = {"source_to_target": "a_to_b", "target_to_source": "b_to_a"}


@dataclass(frozen=True)
class FinetuneConfig:
    """How :func:`finetune` samples, splits, trains and stops."""

    holdout: float = 0.2
    seed: int = 0
    max_pairs: int = 50_000
    max_epochs: int = 200
    max_seconds: float = 900.0
    batch: int = 256
    lr: float = 3e-3
    patience: int = 30
    # Pull toward the current heads of a head without anchors. 0.1 let a French fine-tune of
    # mmr-mini drop English R@5 from 0.99 to 0.62; 0.3 keeps it (and teaches less).
    stay: float = 0.3
    keep: float = 10.0  # strength of keeping the anchors' vectors where they were
    # Which heads learn: "a", "b", "both", or "auto": the text head when exactly one side is
    # text (new words live in the text tower's features), else both.
    train: str = "auto"


@dataclass(frozen=True)
class Pairs:
    """Paired raw features: row i of ``raw_a`` belongs with row i of ``raw_b``."""

    modality_a: str
    modality_b: str
    raw_a: np.ndarray  # (n, da), one row per item (a recording's rows already averaged)
    raw_b: np.ndarray  # (n, db)
    # Per modality, raw features of stored items outside the pairs: a learning head must
    # keep placing them where the current head does (what the collection already knew).
    anchors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Sent after every epoch. ``eta_s`` is an upper bound: early stopping may end sooner."""

    epoch: int
    max_epochs: int
    loss: float
    fraction: float
    eta_s: float | None


@dataclass(frozen=True)
class FinetuneReport:
    """What a fine-tune did and how well held-out pairs retrieve each other, before and after."""

    pairs: int
    train: int
    heldout: int
    epochs: int
    seconds: float
    stopped: str  # "patience", "max_epochs" or "max_seconds"
    before: dict[str, float]
    after: dict[str, float]
    trained: list[str] = field(default_factory=list)
    temperature: float = 0.07

    def as_meta(self) -> dict[str, Any]:
        """JSON-able summary for the aligner artefact's metadata."""
        return rounded_report(asdict(self), ("before", "after"))

    @property
    def improved(self) -> bool:
        """True when the mean held-out recall went up."""
        return float(np.mean(list(self.after.values()))) > float(
            np.mean(list(self.before.values()))
        )


def finetune(
    aligner: Aligner,
    pairs: Pairs,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Aligner, FinetuneReport]:
    """Train the chosen heads of ``aligner`` on ``pairs``; return a new aligner and a report.

    Untouched heads are kept as they are; trained ones become linear heads. The result is
    version 0 (the caller numbers it). The same inputs and config give the same bytes.
    Raises ValueError for unusable inputs and :class:`Cancelled` when ``should_stop()``.
    """
    budget = Budget.start(cfg.max_seconds)
    _check_config(cfg)
    xa, xb = _checked(aligner, pairs)
    keep = _subsample(len(xa), cfg.max_pairs, cfg.seed)
    xa, xb = xa[keep], xb[keep]
    train, held = split_pairs(len(xa), cfg.holdout, cfg.seed)
    learn = _learners(cfg.train, pairs.modality_a, pairs.modality_b)
    heads = {m: aligner.heads[m] for m in (pairs.modality_a, pairs.modality_b)}
    trainable = _Heads(heads, learn, (xa, xb), (train, held), cfg, _anchors(aligner, pairs))
    before = _recall(heads, pairs, xa[held], xb[held])
    best, outcome = _train(trainable, budget, progress, should_stop)
    # A head whose best state is its start never changed: it keeps its kind and bytes.
    changed = {m: h for m, h in best.heads().items() if h is not heads[m]}
    result = aligner
    for modality, head in changed.items():
        result = result.with_head(modality, head, aligner.encoders[modality])
    report = FinetuneReport(
        pairs=len(xa),
        train=len(train),
        heldout=len(held),
        epochs=outcome.epochs,
        seconds=budget.elapsed(),
        stopped=outcome.stopped,
        before=before,
        after=_recall({**heads, **changed}, pairs, xa[held], xb[held]),
        trained=[m for m in heads if m in changed],
        temperature=math.exp(-min(best.log_scale, MAX_LOGIT_SCALE)),
    )
    meta = {**aligner.meta, "kind": "finetune", "finetune": report.as_meta()}
    return Aligner(aligner.dim, result.heads, result.encoders, meta), report


def _anchors(aligner: Aligner, pairs: Pairs) -> dict[str, np.ndarray]:
    """Finite anchor rows of the right width, per modality with a head."""
    found = {}
    for modality, raw in pairs.anchors.items():
        rows = np.asarray(raw, dtype=np.float32)
        head = aligner.heads.get(modality)
        if head is None or rows.ndim != 2 or rows.shape[1] != head.in_dim:
            raise ValueError(f"{modality} anchors must be rows of the head's width")
        found[modality] = rows[np.all(np.isfinite(rows), axis=1)]
    return found


def _check_config(cfg: FinetuneConfig) -> None:
    if cfg.train not in TRAIN_CHOICES:
        raise ValueError(f"train must be one of {TRAIN_CHOICES}, not {cfg.train!r}")
    if cfg.batch < 2 or cfg.max_pairs < MIN_PAIRS or cfg.max_epochs < 1:
        raise ValueError("batch must be >= 2, max_pairs >= 10 and max_epochs >= 1")
    if cfg.lr <= 0 or cfg.stay < 0 or cfg.patience < 1 or cfg.max_seconds <= 0:
        raise ValueError("lr and max_seconds must be positive, stay >= 0, patience >= 1")


def _checked(aligner: Aligner, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as unit float32 rows, or ValueError saying what is wrong."""
    if pairs.modality_a == pairs.modality_b:
        raise ValueError("pairs must join two different modalities")
    sides = []
    for modality, raw in ((pairs.modality_a, pairs.raw_a), (pairs.modality_b, pairs.raw_b)):
        head = aligner.heads.get(modality)
        if head is None:
            raise ValueError(f"the aligner has no {modality} head to fine-tune")
        x = np.asarray(raw, np.float32)
        if x.ndim != 2 or x.shape[1] != head.in_dim:
            raise ValueError(f"{modality} rows must be (n, {head.in_dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{modality} features must be finite (no NaN or inf)")
        sides.append(l2_normalize(x))
    if len(sides[0]) != len(sides[1]):
        raise ValueError(f"{len(sides[0])} rows against {len(sides[1])}: rows must pair up")
    if len(sides[0]) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs, got {len(sides[0])}")
    return sides[0], sides[1]


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` row indices, a seeded choice kept in input order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _learners(train: str, a: str, b: str) -> tuple[bool, bool]:
    """Whether side a and side b learn."""
    if train == "auto":
        # New words reach the text tower as features it never learned to place; moving the
        # text head teaches them without moving stored media (see the experiment in the docs).
        if (a == "text") != (b == "text"):
            return a == "text", b == "text"
        return True, True
    return train in ("a", "both"), train in ("b", "both")


def _recall(
    heads: dict[str, AlignerHead], pairs: Pairs, xa: np.ndarray, xb: np.ndarray
) -> dict[str, float]:
    """Held-out recall through the heads themselves, named "a_to_b@k" and "b_to_a@k"."""
    a = heads[pairs.modality_a].project(xa)
    b = heads[pairs.modality_b].project(xb)
    return _renamed(pair_recall(a, b))


def _renamed(recall: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, value in recall.items():
        direction, k = key.split("@")
        out[f"{_DIRECTIONS[direction]}@{k}"] = value
    return out


@dataclass(frozen=True)
class _State:
    """A snapshot of the trainable maps and their held-out score."""

    maps: dict[str, tuple[np.ndarray, np.ndarray] | AlignerHead]
    log_scale: float
    score: Score

    def heads(self) -> dict[str, AlignerHead]:
        return {
            m: v if isinstance(v, AlignerHead) else AlignerHead.linear(*v)
            for m, v in self.maps.items()
        }


class _Heads:
    """The heads being fine-tuned: one side or both learn, the other side's vectors are fixed."""

    def __init__(
        self,
        heads: dict[str, AlignerHead],
        learn: tuple[bool, bool],
        xs: tuple[np.ndarray, np.ndarray],
        split: tuple[np.ndarray, np.ndarray],
        cfg: FinetuneConfig,
        anchors: dict[str, np.ndarray],
    ) -> None:
        self.heads, self.cfg = heads, cfg
        self.names = list(heads)
        self.x = [torch.from_numpy(np.ascontiguousarray(x)) for x in xs]
        self.train, self.held = (torch.from_numpy(s) for s in split)
        self.start: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        self.fixed: dict[str, torch.Tensor] = {}
        for name, x, learns in zip(self.names, self.x, learn, strict=True):
            head = heads[name]
            if learns:
                w0, b0 = (torch.from_numpy(np.array(t, np.float32)) for t in head.affine())
                self.start[name] = (w0, b0)
                self.params[name] = (torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone()))
            else:
                self.fixed[name] = torch.from_numpy(head.project(x.numpy()))
        self.scale = torch.nn.Parameter(torch.tensor(INIT_SCALE))
        # Anchors: (raw rows, where the starting head puts them) per learning head.
        self.anchors = {
            name: (torch.from_numpy(l2_normalize(raw)), torch.from_numpy(heads[name].project(raw)))
            for name, raw in anchors.items()
            if name in self.params and len(raw)
        }

    def kept(self, gen: torch.Generator) -> torch.Tensor:
        """How far a batch of anchors moved from where the starting heads placed them."""
        total = torch.zeros(())
        for name, (raw, target) in self.anchors.items():
            rows = torch.randint(len(raw), (self.cfg.batch,), generator=gen)
            w, b = self.params[name]
            moved = F.normalize(raw[rows] @ w.T + b, dim=-1) - target[rows]
            total = total + moved.square().sum(dim=1).mean()
        return total

    def side(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        """Side i's (unnormalised) vectors for the given rows."""
        name = self.names[i]
        if name in self.fixed:
            return self.fixed[name][rows]
        w, b = self.params[name]
        return self.x[i][rows] @ w.T + b

    def pull(self) -> torch.Tensor:
        """Squared distance of the learning heads from where they started."""
        total = torch.zeros(())
        for name, (w, b) in self.params.items():
            if name in self.anchors:
                continue  # anchors say precisely what to keep; a blanket pull only slows it
            w0, b0 = self.start[name]
            total = total + (w - w0).square().sum() + (b - b0).square().sum()
        return total

    def evaluate(self, maps: dict[str, Any] | None) -> _State:
        """Held-out recall of the current parameters (or, with ``maps=None``, the start heads)."""
        with torch.no_grad():
            if maps is None:
                a, b = (
                    torch.from_numpy(self.heads[n].project(x[self.held].numpy()))
                    for n, x in zip(self.names, self.x, strict=True)
                )
                maps = dict(self.heads)
            else:
                a, b = (F.normalize(self.side(i, self.held), dim=-1) for i in (0, 1))
        return _State(maps, self.scale.item(), held_out_score(a, b))

    def snapshot(self) -> _State:
        maps: dict[str, Any] = {
            n: (w.detach().numpy().copy(), b.detach().numpy().copy())
            for n, (w, b) in self.params.items()
        }
        maps |= {n: self.heads[n] for n in self.fixed}
        return self.evaluate(maps)

    def loss(self, chunk: torch.Tensor, gen: torch.Generator) -> StepLoss:
        """InfoNCE on the chunk's training rows, plus the pulls toward the start and anchors."""
        rows = self.train[chunk]
        fit = contrastive_loss(self.side(0, rows), self.side(1, rows), self.scale)
        cfg = self.cfg
        return StepLoss(
            minimise=fit + cfg.stay * self.pull() + cfg.keep * self.kept(gen), report=fit
        )


def _train(
    heads: _Heads,
    budget: Budget,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[_State, Outcome]:
    """Train the heads; return the best held-out state and how training ended."""
    cfg = heads.cfg
    params = [p for pair in heads.params.values() for p in pair] + [heads.scale]
    # One generator shuffles the chunks and draws the anchors, in that order each epoch.
    gen = torch.Generator().manual_seed(cfg.seed)
    chunks = ShuffledChunks(len(heads.train), cfg.batch, gen)
    schedule = epoch_schedule(cfg.lr, epochs=cfg.max_epochs, per_epoch=chunks.per_epoch)
    early = EarlyStop(heads.evaluate(None), validate=heads.snapshot, patience=cfg.patience)
    outcome = train_epochs(
        batches=chunks,
        objective=lambda chunk: heads.loss(chunk, gen),
        stepper=Stepper.adamw(
            [{"params": params, "weight_decay": 0.0}], lr=cfg.lr, schedule=schedule
        ),
        max_epochs=cfg.max_epochs,
        budget=budget,
        early_stop=early,
        should_stop=should_stop,
        on_epoch=None if progress is None else lambda end: progress(_progress(end, cfg)),
    )
    return early.best, outcome


def _progress(end: EpochEnd, cfg: FinetuneConfig) -> Progress:
    """Progress after an epoch: the larger of the epoch and time fractions, and an ETA."""
    epoch, elapsed = end.epoch, end.elapsed
    fraction = min(1.0, max(epoch / cfg.max_epochs, elapsed / cfg.max_seconds))
    eta = min(elapsed / epoch * (cfg.max_epochs - epoch), max(0.0, cfg.max_seconds - elapsed))
    return Progress(epoch, cfg.max_epochs, end.loss, fraction, eta)
