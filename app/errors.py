"""Errors of every layer (index/, models/, app/services/ and HTTP's own) turned into the
API's error body, in one place."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.logs import request_id
from app.services.errors import (
    InvalidInput,
    Malformed,
    MalformedJson,
    NotAllowed,
    QueueFull,
    SpaceMismatch,
    TooLarge,
)
from index.builds import BuildStopped
from index.db import statement_timed_out
from index.errors import ConflictError, NotFoundError, OutOfScopeError
from index.faults import DRIVER_ERRORS, database_busy, database_unavailable, storage_full
from models.errors import MediaTooLargeError, Overloaded, UnsupportedMediaError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error of the HTTP layer itself (keys, start-up, body types), with its status and
    snake_case code; the layers below raise status-free errors, mapped in DOMAIN_ERRORS."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ApiError):
    """Missing or invalid API key (401)."""

    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    """A valid key whose scope does not cover the request (403)."""

    status, code = 403, "forbidden"


class NotReady(ApiError):
    """The service cannot answer yet (503)."""

    status, code = 503, "not_ready"


# Errors raised below the web layer, each with its one status and code.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    # index/
    NotFoundError: (404, "not_found"),
    OutOfScopeError: (403, "forbidden"),
    ConflictError: (409, "conflict"),
    BuildStopped: (503, "not_ready"),  # a request that needed an index at shutdown
    # models/
    UnsupportedMediaError: (415, "unsupported_media"),
    MediaTooLargeError: (413, "media_too_large"),
    Overloaded: (429, "overloaded"),
    # app/services/ (and the routers' body readers)
    InvalidInput: (422, "validation_error"),
    Malformed: (400, "bad_request"),
    MalformedJson: (400, "malformed_json"),
    SpaceMismatch: (409, "embedding_space_mismatch"),
    NotAllowed: (403, "forbidden"),
    TooLarge: (413, "payload_too_large"),
    QueueFull: (429, "overloaded"),
}
# Faults of the machine, not the request (index/faults.py): an OperationalError may be an
# outage or a statement timeout, an OSError a full disk or a missing file, so a predicate
# tells them apart where a type cannot.
FAULTS: tuple[tuple[Callable[[BaseException], bool], int, str, str], ...] = (
    (
        database_unavailable,
        503,
        "database_unavailable",
        "the database cannot be reached; nothing was changed by this request, retry later",
    ),
    (
        database_busy,
        503,
        "database_busy",
        "another process held the SQLite database's write lock for longer than this request "
        "could wait; nothing was changed by this request, retry later (several processes "
        "writing much at once: move to Postgres, docs/replicas.md)",
    ),
    (
        storage_full,
        507,
        "insufficient_storage",
        "the server's disk is full; nothing was stored, retry once an operator frees space",
    ),
    (
        statement_timed_out,
        503,
        "query_timeout",
        "the database stopped a statement of this request at its time limit (MMR_SQL_TIMEOUT_S); "
        "nothing was changed: retry later, or ask for less (a narrower filter, a smaller page)",
    ),
)
# Headers that go with a status: a 429 or a 503 says when to come back.
STATUS_HEADERS: dict[int, dict[str, str]] = {
    429: {"Retry-After": "1"},
    503: {"Retry-After": "2"},
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media",
    422: "validation_error",
    429: "too_many_requests",
    503: "not_ready",
    507: "insufficient_storage",
}


def describe_error(exc: Exception) -> tuple[int, str, str]:
    """(status, code, message) of an error a request may raise; 500 for the unexpected."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    for exc_type, (status, code) in DOMAIN_ERRORS.items():
        if isinstance(exc, exc_type):
            return status, code, str(exc)
    for is_fault, status, code, message in FAULTS:
        if is_fault(exc):
            return status, code, message
    return 500, "internal_error", "an internal error occurred; see the server log"


def error_body(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one error shape of API.md, with the status's headers and any given, and the id
    of the request it answers (the X-Request-ID header's, app.access)."""
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "request_id": request_id.get()}},
        headers={**STATUS_HEADERS.get(status, {}), **(headers or {})} or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error a request can raise to the API error body."""

    async def _domain(_: Request, exc: Exception) -> JSONResponse:
        return error_body(*describe_error(exc))

    app.add_exception_handler(ApiError, _domain)

    for exc_type in DOMAIN_ERRORS:
        app.add_exception_handler(exc_type, _domain)

    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        status, code, message = describe_error(exc)
        if status == 500:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_body(status, code, message)

    faults: tuple[type[Exception], ...] = (DBAPIError, *DRIVER_ERRORS, OSError)
    for fault in faults:
        app.add_exception_handler(fault, _fault)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return error_body(400, "malformed_json", "the body is not valid JSON")
        return error_body(422, "validation_error", _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: a 405 lists every method of the path
            headers["Allow"] = allowed_methods(request, headers.get("Allow"))
        return error_body(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # Nobody is left to read the answer and nothing failed here: no 500, no error log.
        log.info("client went away during %s %s", request.method, request.url.path)
        return error_body(
            400,
            "client_disconnected",
            "the connection closed before the whole body arrived; send the request again",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_body(500, "internal_error", "an internal error occurred; see the server log")


def allowed_methods(request: Request, named: str | None) -> str:
    """Every method of this path in the OpenAPI document (the router names only the first
    matching route's, one of several), and HEAD with GET; else what the router named."""
    matching = [
        (template.count("{"), {m.upper() for m in operations})
        for template, operations in request.app.openapi()["paths"].items()
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path)
    ]
    # The most literal template wins, as in routing: /items/batch is not /items/{item_id}.
    fewest = min((params for params, _ in matching), default=0)
    methods = set().union(*(found for params, found in matching if params == fewest))
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) if methods else named or ""


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return "; ".join(parts) or "invalid request"
