"""Soprano-RS's WebSocket `/v1/stream` (its `GET /healthz` is the gateway's own, which answers JSON)."""

from __future__ import annotations

from litestar import WebSocket, websocket

from app.soprano.session import SopranoSession


@websocket("/v1/stream")
async def soprano_stream(socket: WebSocket) -> None:
    """Soprano-RS streaming TTS: `config`, `text`, `flush`, `stop`; framed PCM16 out. Auth is checked by
    the session, which accepts first so that a refused client reads an `error` before the 1008 close."""
    app = socket.app
    await SopranoSession(socket, app.state.service, app.state.settings, app.state.api_keys).run()


ROUTES = [soprano_stream]
