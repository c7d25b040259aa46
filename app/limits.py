"""Request bodies: a cap on each, enforced while it streams in, and a budget of the bytes all
requests in flight hold, so neither one huge upload nor many large ones at once take memory
without bound.

A body is held from the moment it is read until its request's handler ends (Starlette's
multipart parts, the ``bytes`` read from them, the fast path's copy), so what one process
holds of bodies grows with the number of concurrent uploads. ``BodySizeLimit`` reserves
each body in one :class:`~models.media.budget.DecodeBudget` of bytes (``MMR_MAX_BODIES_MB``):
the declared Content-Length before anything reads the body, more as the bytes of a chunked
body pass it. When the budget is full the request waits briefly for room, then gets 429
``overloaded``; a body larger than the whole budget gets 413. The reservation is given back
when the request's response has finished, however it ended.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from models.media.budget import MB, DecodeBudget

# Multipart framing and small form fields ride on top of the file itself.
MULTIPART_SLACK = 64 * 1024
BODY_WAIT_S = 2.0  # how long a body waits for room in the budget before its 429
POLL_S = 0.02  # the event loop must not block: a waiting body looks again this often
HELD = "mmr.body"  # the scope key of a request's _Held, for a second layer further in


class _Refused(Exception):
    """The body is refused: its answer replaces whatever the app makes of the cut body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Held:
    """One request's body in the process's budget, shared by the layers it passes."""

    def __init__(self, budget: DecodeBudget) -> None:
        self.budget = budget
        self.nbytes = 0  # reserved
        self.received = 0
        self.refused: _Refused | None = None
        self.answering = False  # a layer is sending the refusal: let it through
        self.answered = False

    async def grow(self, total: int) -> bool:
        """Hold ``total`` bytes, waiting up to the budget's ``wait_s`` for room; False when
        none came in time (nothing more is held then)."""
        more = total - self.nbytes
        if more <= 0:
            return True
        deadline = time.monotonic() + self.budget.wait_s
        while not self.budget.try_take(more):
            if time.monotonic() >= deadline:
                return False
            await anyio.sleep(POLL_S)
        self.nbytes = total
        return True

    def release(self) -> None:
        self.budget.give_back(self.nbytes)
        self.nbytes = 0


class BodySizeLimit:
    """Answer 413 as soon as Content-Length or the bytes received pass the limit, and hold
    every body in the process's ``budget`` until its response has finished (429 when no
    room comes in time).

    The app is built with two of these sharing one budget: the outer one, in front of the
    fast path, reserves and counts every body; the inner one, inside FastAPI's stack, only
    answers a refusal raised while a route reads the body, so that the metrics layer around
    it counts the 413 or 429 that was sent (not the 400 FastAPI makes of a cut body) and
    the error layer does not log it. ``on_refusal(scope, status)`` counts what the outer
    one answers itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        budget: DecodeBudget,
        on_refusal: Callable[[Scope, int], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes + MULTIPART_SLACK
        self.budget = budget
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: _Held | None = scope.get(HELD)
        if held is not None:  # an outer layer holds and counts this body
            await self._answering(held, scope, receive, send)
            return
        held = scope[HELD] = _Held(self.budget)
        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit():
                self._check(int(declared))
                if not await held.grow(int(declared)):
                    raise self._overloaded()
        except _Refused as refused:
            held.refused = refused
            await self._answer(held, scope, receive, send)
            return
        try:
            await self._answering(held, scope, self._counting(held, receive), send)
        finally:
            held.release()

    def _counting(self, held: _Held, receive: Receive) -> Receive:
        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                held.received += len(message.get("body", b""))
                try:
                    self._check(held.received)
                    if not await held.grow(held.received):
                        raise self._overloaded()
                except _Refused as refused:
                    held.refused = refused
                    raise
            return message

        return counting_receive

    async def _answering(self, held: _Held, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; once the body is refused, its answer replaces the app's."""

        async def guarded_send(message: Message) -> None:
            if held.refused is None or held.answering:
                await send(message)
            elif not held.answered:
                await self._answer(held, scope, receive, send)

        with contextlib.suppress(_Refused):
            await self.app(scope, receive, guarded_send)
        if held.refused is not None and not held.answered:
            await self._answer(held, scope, receive, send)

    async def _answer(self, held: _Held, scope: Scope, receive: Receive, send: Send) -> None:
        refused = held.refused
        assert refused is not None
        held.answered = held.answering = True
        try:
            # The rest of the body is never read: the connection cannot serve another request.
            response = error_body(
                refused.status, refused.code, refused.message, {"Connection": "close"}
            )
            await response(scope, receive, send)
        finally:
            held.answering = False
        if self.on_refusal is not None:
            self.on_refusal(scope, refused.status)

    def _check(self, nbytes: int) -> None:
        """413 for a body that can never be taken, declared or received so far."""
        if nbytes > self.max_bytes:
            limit = f"{(self.max_bytes - MULTIPART_SLACK) / MB:g} MB"
            raise _Refused(
                413,
                "payload_too_large",
                f"the request body is over the {limit} limit (MMR_MAX_UPLOAD_MB); "
                "send a smaller file",
            )
        if nbytes > self.budget.capacity:
            raise _Refused(
                413,
                "payload_too_large",
                f"the request body ({nbytes / MB:.1f} MB) is larger than all the request "
                f"bodies this server holds at once ({self._capacity()}, "
                "MMR_MAX_BODIES_MB); send a smaller body",
            )

    def _overloaded(self) -> _Refused:
        return _Refused(
            429,
            "overloaded",
            "the server holds as many request bodies as it may at once "
            f"({self._capacity()}, MMR_MAX_BODIES_MB); retry shortly (Retry-After), or send "
            "smaller requests",
        )

    def _capacity(self) -> str:
        return f"{self.budget.capacity / MB:g} MB"
