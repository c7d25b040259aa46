"""Contrastive training pieces shared by mmr-mini's training and the aligner trainers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
INIT_SCALE = math.log(1 / 0.07)  # CLIP's starting temperature


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    log_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` with a learnable temperature.

    ``positives[i, j]`` marks pairs that are correct matches besides the diagonal (look-alikes:
    two captions that describe the same kind of thing); each row's target spreads over them
    instead of pushing true matches apart. Without it, only the diagonal is positive.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = log_scale.clamp(max=MAX_LOGIT_SCALE).exp() * a @ b.T
    if positives is None:
        positives = torch.eye(len(a), dtype=logits.dtype, device=logits.device)
    else:
        positives = positives.to(logits.dtype).fill_diagonal_(1.0)
    rows = positives / positives.sum(dim=1, keepdim=True)
    cols = positives.T / positives.T.sum(dim=1, keepdim=True)
    loss_ab = -(rows * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_ba = -(cols * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_ab + loss_ba) / 2


def cosine_lr(step: int, *, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up then cosine decay to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
