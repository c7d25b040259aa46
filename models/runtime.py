"""Which runtime runs the models: thread bounds for torch; quieting libraries' log notices."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch


def configure_torch_threads(threads: int) -> int:
    """Bound torch's intra-op threads (0 = one per core); returns the number set."""
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    return count


class DropNotice(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def without_notice(text: str) -> Iterator[None]:
    """Keep a library's known, harmless notice (on the root logger) out of the log."""
    quiet = DropNotice(text)
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)
