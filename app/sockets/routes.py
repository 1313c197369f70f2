"""The two WebSockets and the speak demo page; the sessions do the work.

- `/api/v1/speak`: the Makima speak protocol (`app.sockets.speak`), text in, paced PCM out.
- `/v1/audio/speech/stream`: LLM text streamed in, speech streamed out (`app.sockets.stream`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import MediaType, Response, WebSocket, get, websocket

from app.sockets.speak import SpeakSession
from app.sockets.stream import TextStreamSession

DEMO_PAGE = Path(__file__).resolve().parent.parent / "static" / "speak-demo.html"


@websocket("/api/v1/speak")
async def speak_socket(socket: WebSocket) -> None:
    """Text in (`speak`), PCM out as binary frames. Auth is checked by the session, which accepts
    first so that a refused client reads an `error` before the 1008 close."""
    app = socket.app
    await SpeakSession(socket, app.state.service, app.state.settings, app.state.api_keys).run()


@cache
def _demo_html() -> bytes:
    return DEMO_PAGE.read_bytes()


@get("/demo/speak", summary="Demo page: type a text, hear it over /api/v1/speak", include_in_schema=False)
async def speak_demo() -> Response:
    """A minimal browser client of `/api/v1/speak`, written the way the Makima frontend uses it."""
    return Response(_demo_html(), media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})



@websocket("/v1/audio/speech/stream")
async def speech_stream_socket(socket: WebSocket) -> None:
    """vLLM-Omni's streaming-input protocol: `session.config`, `input.text`…, `input.done`."""
    app = socket.app
    await TextStreamSession(socket, app.state.service, app.state.settings, app.state.api_keys).run()
