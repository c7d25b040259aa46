"""API-key auth: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` on every /v1 route."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Header, Request

from app.errors import Unauthorized
from app.settings import Settings


async def require_api_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """Pass when auth is off or a configured key is presented (async: no thread hop)."""
    settings: Settings = request.app.state.settings
    keys = settings.keys
    if not keys:
        return
    supplied = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            supplied = token.strip()
    if supplied is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    # Compare against every key in constant time so timing tells nothing about which is close.
    if not any(hmac.compare_digest(supplied.encode(), k.encode()) for k in keys):
        raise Unauthorized("the API key is not valid")
