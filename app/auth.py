"""API-key auth: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` on every /v1 route."""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import Request

from app.errors import Unauthorized
from app.settings import Settings

# What /docs offers under "Authorize" (see :func:`document_security`).
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a key of MMR_API_KEYS"},
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "a key of MMR_API_KEYS",
    },
}


async def require_api_key(request: Request) -> None:
    """Pass when auth is off or a configured key is presented (async: no thread hop).

    The headers are read here rather than declared as parameters: FastAPI validates
    declared headers through pydantic on every request, a cost every search paid.
    """
    settings: Settings = request.app.state.settings
    problem = key_problem(settings.keys, request.headers)
    if problem is not None:
        raise Unauthorized(problem)


def key_problem(keys: Collection[str], headers: Mapping[str, str]) -> str | None:
    """Why these request headers do not pass (None: they do, or auth is off)."""
    if not keys:
        return None
    supplied = headers.get("x-api-key")
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            supplied = token.strip()
    if supplied is None:
        return "an API key is required: send 'Authorization: Bearer <key>'"
    # Compare against every key in constant time so timing tells nothing about which is close.
    if not any(hmac.compare_digest(supplied.encode(), k.encode()) for k in keys):
        return "the API key is not valid"
    return None


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare both key schemes in an OpenAPI document and require one on every /v1 route."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return schema
