"""Bounds on what one connection may cost, whatever the client does (or fails to do).

- Send timeout: a client that stops reading makes every send wait on a full socket buffer forever,
  holding its admission slot. A send that makes no progress for `send_timeout` aborts the
  connection; the response generator is closed, so the synthesis stops and the slot is released.
- Header timeout (a uvicorn protocol subclass): request headers must arrive within
  `header_timeout` of the connection opening (or of the previous response ending), so connections
  that send nothing or trickle header lines are closed.
- Body timeout: the request body must arrive within `body_timeout` of the request's start; a
  slower one gets 408 and the connection is closed.

The transport is reached through the bound `send`/`receive` uvicorn hands the app (its protocol or
request cycle), the only handle ASGI gives on the socket. Every trigger counts in `limits`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from engine import limits

log = logging.getLogger("app.connections")


class SendStalled(ConnectionError):
    """The client read nothing for the send timeout; the connection was aborted."""


def _abort(bound: Any) -> None:
    owner = getattr(bound, "__self__", None)
    transport = getattr(owner, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.abort()  # close() would wait for a buffer the client never drains


def _no_keep_alive(receive: Receive) -> None:
    cycle = getattr(receive, "__self__", None)
    if cycle is not None and hasattr(cycle, "keep_alive"):
        cycle.keep_alive = False  # the unread rest of the body must not be parsed as a next request


def guard(app: ASGIApp, *, send_timeout: float, body_timeout: float) -> ASGIApp:
    """`app` with the send and body timeouts applied to every HTTP request and WebSocket."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        stalled = False

        async def timed_send(message: Message) -> None:
            nonlocal stalled
            try:
                async with asyncio.timeout(send_timeout):
                    await send(message)
            except TimeoutError:
                stalled = True
                limits.hit("send_timeout")
                log.warning("%s %s: the client read nothing for %gs; connection aborted", scope["type"],
                            scope.get("path", ""), send_timeout)
                _abort(send)
                raise SendStalled(f"no send progress for {send_timeout:g}s") from None

        deadline = time.monotonic() + body_timeout
        body_done = scope["type"] != "http"

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # afterwards receive() only waits for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                limits.hit("body_timeout")
                _no_keep_alive(receive)
                raise HTTPException(status_code=408, detail=f"the request body did not arrive within "
                                                            f"{body_timeout:g}s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        try:
            await app(scope, timed_receive, timed_send)
        except BaseException:
            if not stalled:
                raise  # after a stall the connection is gone: what failed on the way out is expected

    return guarded


class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with a deadline on request headers and a count of refused connections."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        limit = getattr(self, "limit_concurrency", None)
        if limit is not None and len(self.connections) > limit:
            limits.hit("max_connections")  # uvicorn answers this connection's requests with 503
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers get the same deadline

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:  # closed, or now a WebSocket
            return
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            return  # the headers of the request in progress arrived in time
        limits.hit("header_timeout")
        transport.close()


def http_protocol(header_timeout: float) -> type:
    return type("GuardedHTTPProtocol", (GuardedHTTPProtocol,), {"header_timeout": header_timeout})
