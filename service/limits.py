"""ASGI middleware: request bodies over a size limit, and requests past the concurrency limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import overloaded_response, problem_response


class BodyRefused(Exception):
    """Raised from `receive` once a streamed body passes its size or time limit."""


class BodyLimits:
    """413 problem for bodies over `limit_for(path)` bytes; 408 when a client stalls.

    Content-Length is checked up front; chunked bodies are counted as they stream in, so a
    client cannot bypass the limit by omitting the header. Each read of the body waits at
    most `read_timeout_s`: a client that sends half a body and stops frees its connection
    and worker slot instead of holding them.
    """

    def __init__(
        self, app: ASGIApp, *, limit_for: Callable[[str], int], read_timeout_s: float
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(limit, scope, receive, send)
            return

        received = 0
        failure: str | None = None
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, failure
            try:
                with anyio.fail_after(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                failure = "timeout"
                raise BodyRefused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    failure = "size"
                    raise BodyRefused
            return message

        async def refuse() -> None:
            if failure == "timeout":
                await self._stalled(scope, receive, send)
            else:
                await self._too_large(limit, scope, receive, send)

        async def guarded_send(message: Message) -> None:
            # Frameworks turn a failing body read into their own 400; once a limit was
            # passed, whatever the app answers is replaced by the 413 or 408 it really is.
            nonlocal refused
            if failure is None:
                await send(message)
            elif not refused and message["type"] == "http.response.start":
                refused = True
                await refuse()

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyRefused:
            if refused:
                return
            refused = True
            await refuse()

    @staticmethod
    async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            title="Payload too large",
            detail=f"the request body is larger than the {limit}-byte limit",
            code="payload_too_large",
            extra={"limit_bytes": limit},
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def _stalled(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            408,
            title="Request timeout",
            detail=f"the request body stalled: no data for {self.read_timeout_s:g} s",
            code="request_timeout",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class ConcurrencyLimit:
    """At most `limit` requests in the app at once; the rest wait in line, then get 503.

    A request waits up to `queue_timeout_s` for a slot, then is answered 503 + Retry-After
    (problem code `overloaded`) without touching the database. Bounding the requests in
    flight to what the database pool holds keeps one slow moment from turning into pool
    timeouts and 500s. Paths in `exempt` (liveness probes) always go through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        queue_timeout_s: float,
        retry_after_s: int,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limit = limit
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.exempt = exempt
        # Created on first use, inside the server's event loop.
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
            else:
                await self._slots.acquire()  # free now: never waits
        except TimeoutError:
            response = overloaded_response(
                f"the server is handling {self.limit} requests and none finished within "
                f"{self.queue_timeout_s:g}s; retry shortly",
                retry_after_s=self.retry_after_s,
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
