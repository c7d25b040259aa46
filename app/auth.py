"""API keys: who a request is (authentication) and what it may do (scopes, collections).

Every ``/v1`` request needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` once
``MMR_API_KEYS`` is set. Those keys are admin keys; more keys live in SQL (``index.keys``),
each with a scope and optionally a list of collections. ``Authenticate`` decides all of it
in front of everything else, before a byte of the body is read: a caller without a key
costs a header lookup, whatever body it sends. Routes read the result as the request's
``Principal`` (``scope["state"]["principal"]``); the dependencies of ``app.deps`` hand a key
limited to collections the stores as that key sees them.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from anyio import to_thread
from fastapi import FastAPI, Request, routing
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden, NotReady, Unauthorized, describe_error, error_body
from index.keys import missing_collection
from index.stores import Stores

READ, WRITE, ADMIN = "read", "write", "admin"
SCOPES = (READ, WRITE, ADMIN)  # each may do what the ones before it may
RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

# The scope of every /v1 route that is not a plain read. A GET needs `read`; any other
# route missing here needs `admin`, so a new route is never open to lesser keys by mistake.
# Activating an aligner version is `write`: a fine-tune job, which `write` may queue,
# activates its version too.
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/v1/collections/{name}/search"): READ,
    ("POST", "/v1/embed"): READ,
    ("POST", "/v1/collections/{name}/items"): WRITE,
    ("POST", "/v1/collections/{name}/items/batch"): WRITE,
    ("PATCH", "/v1/collections/{name}/items/{item_id}"): WRITE,
    ("DELETE", "/v1/collections/{name}/items/{item_id}"): WRITE,
    ("POST", "/v1/collections/{name}/aligners/{version}/activate"): WRITE,
    ("POST", "/v1/jobs"): WRITE,
    ("POST", "/v1/jobs/{job_id}/cancel"): WRITE,
    # A rollback is a migrate job (as POST /v1/jobs); confirming drops the kept space.
    ("POST", "/v1/collections/{name}/migration/rollback"): WRITE,
    ("POST", "/v1/collections/{name}/migration/confirm"): ADMIN,
    ("POST", "/v1/collections"): ADMIN,
    ("DELETE", "/v1/collections/{name}"): ADMIN,
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): ADMIN,
}
# Routes only an admin key of every collection may use: a key limited to collections must
# not see the others' keys, nor make a key wider than itself.
UNLIMITED_ONLY = frozenset(
    {("GET", "/v1/keys"), ("POST", "/v1/keys"), ("DELETE", "/v1/keys/{key_id}")}
)

# What /docs offers under "Authorize" (see :func:`document_security`).
KEY_DESCRIPTION = "a key of MMR_API_KEYS (admin), or one made by POST /v1/keys"
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": KEY_DESCRIPTION},
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": KEY_DESCRIPTION,
    },
}


class KeyServices(Protocol):
    """What authentication needs of the running services (``app.state.Services``, which
    imports this module to scope itself by the principal): the stores, to know whether
    they read without a round trip, and the keys kept in SQL."""

    stores: Stores


@dataclass(frozen=True)
class Principal:
    """Who a request is: its key's scope and the collections it may see (None: all)."""

    scope: str
    collections: frozenset[str] | None = None
    key_id: str | None = None  # the SQL key's id; None for MMR_API_KEYS (and auth off)

    @property
    def unlimited_admin(self) -> bool:
        """Whether this key may do everything."""
        return self.scope == ADMIN and self.collections is None


EVERYONE = Principal(ADMIN)  # auth off, or a key of MMR_API_KEYS


def required_scope(method: str, path: str) -> str:
    """The scope a route (its method and path template) needs."""
    found = ROUTE_SCOPES.get((method, path))
    if found is not None:
        return found
    return READ if method in ("GET", "HEAD") else ADMIN


def route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` a proxy mounts the app under
    (as Starlette's router strips it), so ``--root-path /api`` cannot walk around the keys."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def guarded(path: str) -> bool:
    """Whether a path needs a key (health, metrics, docs and the web page stay open)."""
    return path == "/v1" or path.startswith("/v1/")


def supplied_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents (a bearer token wins over X-API-Key), or None."""
    supplied = headers.get("x-api-key")
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            supplied = token.strip()
    return supplied


def is_admin_key(keys: Collection[str], supplied: str) -> bool:
    """Whether ``supplied`` is one of MMR_API_KEYS."""
    # Compared with every key in constant time so timing tells nothing about which is close.
    matches = [hmac.compare_digest(supplied.encode(), k.encode()) for k in keys]
    return any(matches)


class Authenticate:
    """ASGI middleware in front of the whole app (the fast path included): answers 401, 403
    and the 404 of a collection a key may not see before anything reads the body."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self._routes: list[RouteTemplate] | None = None  # built on first use: all are added

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not guarded(route_path(scope)):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._principal(Headers(scope=scope))
            if not principal.unlimited_admin:
                if self._routes is None:
                    self._routes = route_templates(self.fastapi)
                authorize(principal, scope, self._routes)
        except Exception as exc:
            status, code, message = describe_error(exc)
            if status == 500:
                raise
            response = error_body(status, code, message)
            if status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            self._count(scope, status)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _count(self, scope: Scope, status: int) -> None:
        """Count a refusal as the metrics layer (behind this one) counts answers: by route
        template, or "unauthenticated" before the key is known (bounded label values)."""
        template = "unauthenticated"
        if status != 401 and self._routes is not None:
            template = match_route(scope, self._routes)[0] or template
        self.fastapi.state.metrics.requests.labels(scope["method"], template, str(status)).inc()

    async def _principal(self, headers: Headers) -> Principal:
        admin_keys = self.fastapi.state.settings.keys
        if not admin_keys:
            return EVERYONE  # auth off: keys in SQL count only once MMR_API_KEYS is set
        supplied = supplied_key(headers)
        if supplied is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        if is_admin_key(admin_keys, supplied):
            return EVERYONE
        services: KeyServices | None = self.fastapi.state.services
        if services is None:
            raise NotReady("the service is starting; try again shortly")
        if services.stores.reads_without_waiting():  # the embedded database: no round trip
            row = services.stores.keys.find(supplied)
        else:
            row = await to_thread.run_sync(services.stores.keys.find, supplied)
        if row is None:
            raise Unauthorized(
                "the API key is not valid (or was deleted): send a key of MMR_API_KEYS or "
                "one made by POST /v1/keys"
            )
        allowed = None if row.collections is None else frozenset(row.collections)
        return Principal(row.scope, allowed, row.id)


@dataclass(frozen=True)
class RouteTemplate:
    """A /v1 route as authorisation sees it: its methods and path template."""

    methods: frozenset[str]
    template: str
    regex: re.Pattern[str]


def route_templates(app: FastAPI) -> list[RouteTemplate]:
    """The app's /v1 routes in the router's order (the first that matches is the one run)."""
    contexts = getattr(routing, "iter_route_contexts", None)  # FastAPI >= 0.16x nests routers
    routes: Sequence[Any] = list(contexts(app.routes)) if contexts else app.routes
    found = []
    for route in routes:
        template, methods = getattr(route, "path_format", None), getattr(route, "methods", None)
        if isinstance(template, str) and methods and guarded(template):
            found.append(RouteTemplate(frozenset(methods), template, compile_path(template)[0]))
    return found


def match_route(scope: Scope, routes: Sequence[RouteTemplate]) -> tuple[str, dict[str, str]]:
    """The template and path parameters of the route a request goes to ("" when none)."""
    path = route_path(scope)
    for route in routes:
        if scope["method"] in route.methods:
            found = route.regex.match(path)
            if found is not None:
                return route.template, found.groupdict()
    return "", {}


def authorize(principal: Principal, scope: Scope, routes: Sequence[RouteTemplate]) -> None:
    """403 when the route needs more than the key's scope; 404 for a collection in the path
    that the key may not see. A request that matches no route is left to the router."""
    template, params = match_route(scope, routes)
    if not template:
        return
    method = scope["method"]
    needed = required_scope(method, template)
    if RANK[principal.scope] < RANK[needed]:
        raise Forbidden(
            f"this key's scope is {principal.scope!r} but {method} {template} needs "
            f"{needed!r}: use a key with that scope"
        )
    if (method, template) in UNLIMITED_ONLY and principal.collections is not None:
        raise Forbidden(
            "managing keys needs an admin key that is not limited to collections: use one "
            "of MMR_API_KEYS or such a key"
        )
    name = params.get("name")
    if name is not None and principal.collections is not None and name not in principal.collections:
        raise missing_collection(name)


def principal_of(request: Request) -> Principal | None:
    """The principal ``Authenticate`` found for this request (None: it did not run)."""
    return principal_of_scope(request.scope)


def principal_of_scope(scope: Scope) -> Principal | None:
    """The principal ``Authenticate`` put in an ASGI scope, or None."""
    found = scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


async def require_api_key(request: Request) -> None:
    """Every /v1 router's dependency: refuse a request ``Authenticate`` did not pass (an app
    assembled without it), so a missing middleware fails closed."""
    if principal_of(request) is None:
        raise Unauthorized("the request was not authenticated")


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare both key schemes in an OpenAPI document and require one on every /v1 route."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return schema
