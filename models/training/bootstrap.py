"""Learn a linear aligner head from paired rows: one encoder's features onto another's.

Main use, ``mmr bootstrap-audio``: fit ``normalize(W x + b)`` from CLAP's text vector of a
caption (source) onto CLIP's (target); CLAP audio shares CLAP text's space, so the head then
carries audio near CLIP text and images without one audio/image pair. Closed-form ridge, then
symmetric InfoNCE in the training loop (:mod:`models.training.loop`), early stopping on
held-out recall. Heads are fit on unit-length source rows, so they expect unit-length input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.encoders.aligner import AlignerHead, l2_normalize
from models.training.batches import ShuffledChunks
from models.training.budget import Budget
from models.training.contrastive import INIT_SCALE, MAX_LOGIT_SCALE, contrastive_loss
from models.training.early_stop import EarlyStop
from models.training.loop import EpochEnd, Outcome, Progress, StepLoss, train_epochs
from models.training.optimiser import Stepper, epoch_schedule
from models.training.validation import (
    KS,
    MIN_PAIRS,
    Score,
    held_out_score,
    pair_recall,
    rounded_report,
    split_pairs,
)


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit_linear_head` splits, initialises, trains and stops."""

    holdout: float = 0.1
    seed: int = 0
    max_epochs: int = 200
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    ridge: float = 1e-2  # relative to the mean eigenvalue of the source covariance
    patience: int = 10
    max_seconds: float = 300.0


@dataclass(frozen=True)
class FitReport:
    """What a fit did and how well the head retrieves held-out pairs, before and after."""

    pairs: int
    train: int
    heldout: int
    epochs: int
    seconds: float
    before: dict[str, float]
    init: dict[str, float]
    after: dict[str, float]
    temperature: float
    stopped: str = ""  # "patience", "max_epochs" or "max_seconds"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_meta(self) -> dict[str, Any]:
        """JSON-able summary for the aligner artefact's metadata."""
        meta = rounded_report(asdict(self), ("before", "init", "after"))
        return {"method": "ridge+contrastive", **meta}


def _chance(n: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected recall of a ranking that knows nothing: k/n per direction."""
    return {f"{d}@{k}": min(k, n) / n for d in ("source_to_target", "target_to_source") for k in ks}


def _checked(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as unit float32 rows, or ValueError saying what is wrong."""
    s, t = np.asarray(source, np.float32), np.asarray(target, np.float32)
    if s.ndim != 2 or t.ndim != 2:
        raise ValueError(f"source and target must be 2-D (n, dim), got {s.shape} and {t.shape}")
    if len(s) != len(t):
        raise ValueError(f"source has {len(s)} rows but target has {len(t)}: rows must pair up")
    if len(s) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs, got {len(s)}")
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        raise ValueError("source and target must be finite (no NaN or inf)")
    return l2_normalize(s), l2_normalize(t)


def _ridge(x: np.ndarray, y: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: ``(W (out, in), b)``."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    mx, my = x64.mean(axis=0), y64.mean(axis=0)
    xc = x64 - mx
    gram = xc.T @ xc
    # Relative to the mean eigenvalue, so one strength suits any width and row count.
    lam = strength * max(np.trace(gram) / len(gram), 1e-12)
    a = np.linalg.solve(gram + lam * np.eye(len(gram)), xc.T @ (y64 - my))
    return a.T.astype(np.float32), (my - mx @ a).astype(np.float32)


def fit_linear_head(
    source: np.ndarray,
    target: np.ndarray,
    *,
    cfg: FitConfig = FitConfig(),
    start: AlignerHead | None = None,
    progress: Progress | None = None,
) -> tuple[AlignerHead, FitReport]:
    """Fit a linear head taking ``source`` rows onto the paired ``target`` rows.

    ``before`` is the held-out recall of ``start`` or, without one, chance (k / held-out).
    ``init`` follows the ridge initialisation (or ``start`` itself); ``after`` is the best
    held-out state seen while training, so it never falls below ``init`` on mean recall.
    The same inputs and seed give the same head bytes. ``progress`` hears of each epoch
    (training may stop early, short of ``cfg.max_epochs``).
    """
    budget = Budget.start(cfg.max_seconds)
    x, y = _checked(source, target)
    if cfg.batch < 2:
        raise ValueError(f"batch must be at least 2, got {cfg.batch}")
    train, held = split_pairs(len(x), cfg.holdout, cfg.seed)
    if start is not None:
        if (start.in_dim, start.out_dim) != (x.shape[1], y.shape[1]):
            raise ValueError(
                f"start head is {start.in_dim}->{start.out_dim}, data is {x.shape[1]}->{y.shape[1]}"
            )
        before = pair_recall(start.project(x[held]), y[held])
        w0, b0 = (np.array(t, np.float32) for t in start.affine())
    else:
        before = _chance(len(held))
        w0, b0 = _ridge(x[train], y[train], cfg.ridge)
    init = pair_recall(AlignerHead.linear(w0, b0).project(x[held]), y[held])
    state, outcome = _train(x[train], y[train], x[held], y[held], (w0, b0), cfg, budget, progress)
    head = AlignerHead.linear(state.w.numpy(), state.b.numpy())
    report = FitReport(
        pairs=len(x),
        train=len(train),
        heldout=len(held),
        epochs=outcome.epochs,
        seconds=budget.elapsed(),
        before=before,
        init=init,
        after=pair_recall(head.project(x[held]), y[held]),
        temperature=math.exp(-min(state.log_scale, MAX_LOGIT_SCALE)),
        stopped=outcome.stopped,
        extra={"seed": cfg.seed, "holdout": cfg.holdout, "ridge": cfg.ridge, "lr": cfg.lr},
    )
    return head, report


@dataclass(frozen=True)
class _State:
    """A snapshot of the trainable head and its held-out score."""

    w: torch.Tensor
    b: torch.Tensor
    log_scale: float
    score: Score


class _Head:
    """The trainable map ``x W^T + b`` and its temperature, from ``init``."""

    def __init__(self, init: tuple[np.ndarray, np.ndarray]) -> None:
        self.w = torch.nn.Parameter(torch.from_numpy(init[0].copy()))
        self.b = torch.nn.Parameter(torch.from_numpy(init[1].copy()))
        self.scale = torch.nn.Parameter(torch.tensor(INIT_SCALE))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> StepLoss:
        loss = contrastive_loss(x @ self.w.T + self.b, y, self.scale)
        return StepLoss(minimise=loss, report=loss)

    def snapshot(self, xh: torch.Tensor, yh: torch.Tensor) -> _State:
        """The current parameters and how they score on the held-out rows."""
        with torch.no_grad():
            proj = F.normalize(xh @ self.w.T + self.b, dim=-1)
        w, b = self.w.detach().clone(), self.b.detach().clone()
        return _State(w, b, self.scale.item(), held_out_score(proj, yh))


def _train(
    x: np.ndarray,
    y: np.ndarray,
    xh: np.ndarray,
    yh: np.ndarray,
    init: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    budget: Budget,
    progress: Progress | None = None,
) -> tuple[_State, Outcome]:
    """Contrastive fine-tuning from ``init``; returns the best state and how training ended."""
    xt, yt, xht, yht = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, xh, yh))
    head = _Head(init)
    chunks = ShuffledChunks(len(x), cfg.batch, torch.Generator().manual_seed(cfg.seed))
    groups = [
        {"params": [head.w], "weight_decay": cfg.weight_decay},
        {"params": [head.b, head.scale], "weight_decay": 0.0},
    ]
    schedule = epoch_schedule(cfg.lr, epochs=cfg.max_epochs, per_epoch=chunks.per_epoch)
    early = EarlyStop(
        head.snapshot(xht, yht),
        validate=lambda: head.snapshot(xht, yht),
        patience=cfg.patience,
    )
    outcome = train_epochs(
        batches=chunks,
        objective=lambda rows: head.loss(xt[rows], yt[rows]),
        stepper=Stepper.adamw(groups, lr=cfg.lr, schedule=schedule),
        max_epochs=cfg.max_epochs,
        budget=budget,
        early_stop=early,
        on_epoch=None if progress is None else _epochs(progress, cfg.max_epochs),
    )
    return early.best, outcome


def _epochs(progress: Progress, total: int) -> Callable[[EpochEnd], None]:
    return lambda end: progress("fitting the head", end.epoch, total)


def bootstrap_audio_head(
    *,
    captions: Sequence[str],
    source_text: Callable[[list[str]], np.ndarray],
    target_text: Callable[[list[str]], np.ndarray],
    cfg: FitConfig = FitConfig(),
    batch: int = 64,
    progress: Progress | None = None,
) -> tuple[AlignerHead, FitReport]:
    """Fit the CLAP-audio -> CLIP head from text alone.

    ``source_text`` embeds captions with the audio model's text tower (CLAP), ``target_text``
    with the shared space's text tower (CLIP). Captions are stripped, blanks dropped and
    repeats removed keeping first order: a repeated caption would be its own negative.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    texts = list(dict.fromkeys(c.strip() for c in captions if c.strip()))
    if len(texts) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} distinct captions, got {len(texts)}")
    said = progress or _silent
    source = _embed(
        source_text, texts, batch, lambda n: said("captions, audio model", n, len(texts))
    )
    target = _embed(
        target_text, texts, batch, lambda n: said("captions, image model", n, len(texts))
    )
    head, report = fit_linear_head(source, target, cfg=cfg, progress=progress)
    extra = {**report.extra, "captions": len(captions), "distinct_captions": len(texts)}
    return head, replace(report, extra=extra)


def _embed(
    fn: Callable[[list[str]], np.ndarray],
    texts: list[str],
    batch: int,
    done: Callable[[int], None],
) -> np.ndarray:
    """Embed in batches, checking each batch returns one row per text."""
    parts = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        out = np.asarray(fn(chunk), np.float32)
        if out.ndim != 2 or len(out) != len(chunk):
            raise ValueError(f"text embedder returned {out.shape} for {len(chunk)} captions")
        parts.append(out)
        done(i + len(chunk))
    return np.concatenate(parts)


def _silent(stage: str, done: int, total: int) -> None:
    pass
