"""Keeping a library's known, harmless log notices out of the log (ONNX Runtime's quantiser,
open_clip's random-init warning): a notice every start prints is a notice nobody reads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


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
