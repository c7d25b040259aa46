"""Request body cap enforced while the body streams in, so a huge upload is never read whole."""

from __future__ import annotations

import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Multipart framing and small form fields ride on top of the file itself.
MULTIPART_SLACK = 64 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 as soon as Content-Length or the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        state = {"received": 0, "exceeded": False, "answered": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the aborted body (often a 400), the answer is 413.
            if state["exceeded"]:
                if not state["answered"]:
                    state["answered"] = True
                    await self._reject(send)
                return
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if state["exceeded"] and not state["answered"]:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        limit_mb = (self.max_bytes - MULTIPART_SLACK) / (1024 * 1024)
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"the request body is over the {limit_mb:g} MB limit "
                    "(MMR_MAX_UPLOAD_MB); send a smaller file",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
