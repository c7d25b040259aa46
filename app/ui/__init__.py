"""The search page (``/ui/``): static files served by the service itself, nothing from
another host, no build step (docs/web-page.md).

Every file goes out with a Content-Security-Policy that allows this host only (images and
sounds also from ``blob:`` URLs, which the page makes of what it fetched with the key), so
that no request can leave the host even if a result's text held markup. ``GET /`` sends
browsers here.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Asked again on every load (a 304 while unchanged): after an upgrade, no old script
    # runs against the new page and API.
    (b"cache-control", b"no-cache"),
]


class PageFiles(StaticFiles):
    """StaticFiles (ETag, Last-Modified, 304) with the page's security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Serve the page at ``/ui/`` and send ``/`` there."""
    app.mount("/ui", PageFiles(directory=STATIC, html=True), name="ui")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
