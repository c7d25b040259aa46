"""Learn a linear aligner head from paired rows: one encoder's features onto another's.

Main use, ``mmr bootstrap-audio``: fit ``normalize(W x + b)`` from CLAP's text vector of a
caption (source) onto CLIP's (target); CLAP audio shares CLAP text's space, so the head then
carries audio near CLIP text and images without one audio/image pair. Closed-form ridge, then
symmetric InfoNCE with early stopping on held-out recall. Heads are fit on unit-length source
rows, so they expect unit-length input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.encoders.aligner import AlignerHead, l2_normalize
from models.training.contrastive import contrastive_loss, cosine_lr

KS = (1, 5, 10)
MIN_PAIRS = 10
MIN_HELDOUT = 2
INIT_SCALE = math.log(1 / 0.07)  # CLIP's starting temperature
TIE_SCALE = math.log(1 / 0.05)  # fixed: the tie-break loss must not improve by sharpening alone
RANK_BLOCK = 1024  # query rows per similarity block: bounds memory for large held-out sets


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
        meta = asdict(self)
        for key in ("before", "init", "after"):
            meta[key] = {k: round(v, 4) for k, v in meta[key].items()}
        meta["seconds"] = round(self.seconds, 2)
        meta["temperature"] = round(self.temperature, 5)
        return {"method": "ridge+contrastive", **meta}


def split_pairs(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices, each sorted; at least two rows on each side."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must lie strictly between 0 and 1, not {holdout}")
    if n < 2 * MIN_HELDOUT:
        raise ValueError(f"need at least {2 * MIN_HELDOUT} pairs to split, got {n}")
    held = min(max(MIN_HELDOUT, round(n * holdout)), n - MIN_HELDOUT)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def pair_recall(
    source_vecs: np.ndarray, target_vecs: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall@k both ways where row i of one side matches row i of the other.

    Inputs must already live in one space (unit vectors). Ties rank the lower index first,
    as :func:`models.training.evaluate.recall_at` does.
    """
    s = np.asarray(source_vecs, np.float32)
    t = np.asarray(target_vecs, np.float32)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"pair_recall needs two equal (n, dim) arrays, got {s.shape}, {t.shape}")
    out: dict[str, float] = {}
    for name, ranks in (("source_to_target", _ranks(s, t)), ("target_to_source", _ranks(t, s))):
        out |= {f"{name}@{k}": float((ranks < k).mean()) for k in ks}
    return out


def _ranks(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Zero-based rank of each query's own row in the gallery (O(n^2) compares, no sort)."""
    ranks = np.empty(len(queries), np.int64)
    cols = np.arange(len(gallery))
    for i0 in range(0, len(queries), RANK_BLOCK):
        scores = queries[i0 : i0 + RANK_BLOCK] @ gallery.T
        rows = np.arange(i0, i0 + len(scores))
        own = scores[rows - i0, rows][:, None]
        ties_before = (scores == own) & (cols[None, :] < rows[:, None])
        ranks[rows] = (scores > own).sum(axis=1) + ties_before.sum(axis=1)
    return ranks


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
) -> tuple[AlignerHead, FitReport]:
    """Fit a linear head taking ``source`` rows onto the paired ``target`` rows.

    ``before`` is the held-out recall of ``start`` or, without one, chance (k / held-out).
    ``init`` follows the ridge initialisation (or ``start`` itself); ``after`` is the best
    held-out state seen while training, so it never falls below ``init`` on mean recall.
    The same inputs and seed give the same head bytes.
    """
    began = time.monotonic()
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
    state, epochs, stopped = _train(x[train], y[train], x[held], y[held], (w0, b0), cfg, began)
    head = AlignerHead.linear(state.w.numpy(), state.b.numpy())
    report = FitReport(
        pairs=len(x),
        train=len(train),
        heldout=len(held),
        epochs=epochs,
        seconds=time.monotonic() - began,
        before=before,
        init=init,
        after=pair_recall(head.project(x[held]), y[held]),
        temperature=math.exp(-min(state.log_scale, math.log(100.0))),
        stopped=stopped,
        extra={"seed": cfg.seed, "holdout": cfg.holdout, "ridge": cfg.ridge, "lr": cfg.lr},
    )
    return head, report


@dataclass(frozen=True)
class _State:
    """A snapshot of the trainable head and its held-out score."""

    w: torch.Tensor
    b: torch.Tensor
    log_scale: float
    recall: float
    loss: float

    def beats(self, other: _State) -> bool:
        # Small held-out sets saturate recall; a clearly lower loss then breaks the tie.
        return self.recall > other.recall or (
            self.recall == other.recall and self.loss < other.loss * 0.999
        )


def _snapshot(
    w: torch.Tensor, b: torch.Tensor, s: torch.Tensor, xh: torch.Tensor, yh: torch.Tensor
) -> _State:
    """Score the current parameters on the held-out rows."""
    with torch.no_grad():
        proj = F.normalize(xh @ w.T + b, dim=-1)
        recall = pair_recall(proj.numpy(), yh.numpy())
        loss = contrastive_loss(proj, yh, torch.tensor(TIE_SCALE))
    mean = float(np.mean(list(recall.values())))
    return _State(w.detach().clone(), b.detach().clone(), s.item(), mean, float(loss))


def _train(
    x: np.ndarray,
    y: np.ndarray,
    xh: np.ndarray,
    yh: np.ndarray,
    init: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    began: float,
) -> tuple[_State, int, str]:
    """Contrastive fine-tuning from ``init``; returns the best state, epochs run, why stopped."""
    xt, yt, xht, yht = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, xh, yh))
    w = torch.nn.Parameter(torch.from_numpy(init[0].copy()))
    b = torch.nn.Parameter(torch.from_numpy(init[1].copy()))
    s = torch.nn.Parameter(torch.tensor(INIT_SCALE))
    groups = [
        {"params": [w], "weight_decay": cfg.weight_decay},
        {"params": [b, s], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    per_epoch = math.ceil(len(x) / cfg.batch)
    total = cfg.max_epochs * per_epoch
    best = _snapshot(w, b, s, xht, yht)
    deadline, step, stale = began + cfg.max_seconds, 0, 0
    for epoch in range(cfg.max_epochs):
        # Equal-sized chunks: no trailing batch of one row, whose loss is trivially zero.
        for rows in torch.randperm(len(x), generator=gen).tensor_split(per_epoch):
            if time.monotonic() > deadline:
                return best, epoch, "max_seconds"
            for group in opt.param_groups:
                group["lr"] = cosine_lr(
                    step, total=total, warmup=per_epoch, peak=cfg.lr, floor=cfg.lr / 10
                )
            loss = contrastive_loss(xt[rows] @ w.T + b, yt[rows], s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        now = _snapshot(w, b, s, xht, yht)
        best, stale = (now, 0) if now.beats(best) else (best, stale + 1)
        if stale >= cfg.patience:
            return best, epoch + 1, "patience"
    return best, cfg.max_epochs, "max_epochs"


def bootstrap_audio_head(
    *,
    captions: Sequence[str],
    source_text: Callable[[list[str]], np.ndarray],
    target_text: Callable[[list[str]], np.ndarray],
    cfg: FitConfig = FitConfig(),
    batch: int = 64,
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
    source = _embed(source_text, texts, batch)
    target = _embed(target_text, texts, batch)
    head, report = fit_linear_head(source, target, cfg=cfg)
    extra = {**report.extra, "captions": len(captions), "distinct_captions": len(texts)}
    return head, replace(report, extra=extra)


def _embed(fn: Callable[[list[str]], np.ndarray], texts: list[str], batch: int) -> np.ndarray:
    """Embed in batches, checking each batch returns one row per text."""
    parts = []
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        out = np.asarray(fn(chunk), np.float32)
        if out.ndim != 2 or len(out) != len(chunk):
            raise ValueError(f"text embedder returned {out.shape} for {len(chunk)} captions")
        parts.append(out)
    return np.concatenate(parts)
