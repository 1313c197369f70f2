"""WebSocket `/v1/audio/speech/stream`: LLM text streamed in, speech streamed out (see app/ws_stream.py)."""

from __future__ import annotations

from litestar import WebSocket, websocket

from app.ws_stream import TextStreamSession


@websocket("/v1/audio/speech/stream")
async def speech_stream_socket(socket: WebSocket) -> None:
    """vLLM-Omni's streaming-input protocol: `session.config`, `input.text`…, `input.done`."""
    app = socket.app
    await TextStreamSession(socket, app.state.service, app.state.settings, app.state.api_keys).run()
