"""A streamed response whose body iterator is closed however sending ends.

Litestar closes the iterator when the client disconnects while the iterator is running, but not when
`send` itself fails (the connection guard aborts a client that stopped reading): the generator then
stays suspended at its `yield`, holding its synthesis and admission slot until garbage collection.
"""

from __future__ import annotations

from typing import Any

from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send


class _ClosingASGIStream(ASGIStreamingResponse):
    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        try:
            await super().send_body(send, receive)
        finally:
            close = getattr(self.iterator, "aclose", None)
            if close is not None:
                await close()


class ClosingStream(Stream):
    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIStreamingResponse:
        response = super().to_asgi_response(*args, **kwargs)
        response.__class__ = _ClosingASGIStream  # same slots: only send_body changes
        return response
