"""The process's log: one handler on stderr, text for people or JSON lines for log shippers
(``MMR_LOG_FORMAT``), every record of a request carrying its id.

Our loggers (``app``, ``models``, ``index``, ``mmr``) and uvicorn's log at ``MMR_LOG_LEVEL``;
everything else stays at WARNING. The libraries we load (open_clip, ONNX Runtime's quantiser)
log dozens of INFO lines a start through the root logger itself, and alembic one a migration:
with the root at WARNING their warnings still show and their chatter does not.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

LogFormat = Literal["auto", "text", "json"]

# The id of the request being served (app.access sets it): every record made while serving
# it, in the event loop or in a thread the request's context was copied to, carries it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

OURS = ("app", "models", "index", "mmr", "uvicorn")
# What an access line carries besides the message, as JSON keys (app.access sets them).
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")
# uvicorn's start-up narration: the start-up block says what matters (app.lifespan).
UVICORN_CHATTER = frozenset(
    {
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
    }
)


def configure_logging(*, level: str, fmt: LogFormat) -> None:
    """Send every log record to stderr in ``fmt`` (``auto``: text on a terminal, JSON
    otherwise); ours and uvicorn's at ``level``, other libraries' at WARNING. Calling it
    again replaces what an earlier call set up."""
    _install_record_factory()
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if resolve_format(fmt) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OURS:
        logging.getLogger(name).setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()  # uvicorn's own config: through ours instead
        logging.getLogger(name).propagate = True
    # app.access logs each request once; uvicorn's access log would log it again.
    logging.getLogger("uvicorn.access").propagate = False
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropUvicornChatter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(_DropUvicornChatter())


def resolve_format(fmt: LogFormat, stream: TextIO | None = None) -> Literal["text", "json"]:
    """``text`` or ``json``: ``auto`` is text when stderr is a terminal."""
    if fmt != "auto":
        return fmt
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


def mask_url(url: str) -> str:
    """A database URL fit for a log: its password, if any, is ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a URL SQLAlchemy cannot read)"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


class _DropUvicornChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in UVICORN_CHATTER


def _install_record_factory() -> None:
    """Stamp every record with the request id of the context it is made in (a record
    factory, not a handler filter: pytest's caplog and any other handler see it too)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "stamps_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    factory.stamps_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _utc(created: float) -> str:
    """ISO 8601 in UTC to the millisecond: 2026-01-31T12:00:00.123Z."""
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((created - whole) * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message; request_id inside a request;
    method, route, status and duration_ms on access lines; exc_info when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        for key in ACCESS_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-31 12:00:00 INFO app.errors [request id]: message`` (the id inside a
    request only), then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        where = record.name if rid is None else f"{record.name} [{rid}]"
        return f"{record.asctime} {record.levelname} {where}: {record.message}"
