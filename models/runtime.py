"""Which runtime runs the models: thread bounds for torch."""

from __future__ import annotations

import os

import torch


def configure_torch_threads(threads: int) -> int:
    """Bound torch's intra-op threads (0 = one per core); returns the number set."""
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    return count
