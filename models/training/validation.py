"""The held-out metric every aligner trainer validates on: a seeded split of the pairs, recall
both ways between paired rows, the :class:`Score` that early stopping compares, and how a
trainer's report of it is rounded for an aligner's metadata."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.training.contrastive import contrastive_loss

KS = (1, 5, 10)
MIN_PAIRS = 10
MIN_HELDOUT = 2
TIE_SCALE = math.log(1 / 0.05)  # fixed: the tie-break loss must not improve by sharpening alone
RANK_BLOCK = 1024  # query rows per similarity block: bounds memory for large held-out sets


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


@dataclass(frozen=True)
class Score:
    """How well one state retrieves the held-out pairs: mean recall, and a loss for ties."""

    recall: float
    loss: float

    def beats(self, other: Score) -> bool:
        """Higher recall; at equal recall, a loss lower by more than 0.1 %.

        Small held-out sets saturate recall; a clearly lower loss then breaks the tie.
        """
        return self.recall > other.recall or (
            self.recall == other.recall and self.loss < other.loss * 0.999
        )


def held_out_score(a: torch.Tensor, b: torch.Tensor) -> Score:
    """The :class:`Score` of paired unit rows ``a[i] <-> b[i]``: recall@k both ways, averaged,
    and InfoNCE at the fixed ``TIE_SCALE``."""
    with torch.no_grad():
        recall = pair_recall(a.numpy(), b.numpy())
        loss = contrastive_loss(a, b, torch.tensor(TIE_SCALE))
    return Score(float(np.mean(list(recall.values()))), float(loss))


def rounded_report(meta: dict[str, Any], recalls: Sequence[str]) -> dict[str, Any]:
    """A trainer's report (``asdict``) for an aligner's metadata: the ``recalls`` dicts to 4
    places, ``seconds`` to 2 and ``temperature`` to 5, in place; the same dict back."""
    for key in recalls:
        meta[key] = {k: round(v, 4) for k, v in meta[key].items()}
    meta["seconds"] = round(meta["seconds"], 2)
    meta["temperature"] = round(meta["temperature"], 5)
    return meta
