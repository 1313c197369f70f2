"""`/ws/tts`: Chatterbox's streaming socket.

`ready` on connect; each `say` (with its `id`) is checked at once (model, voice, language, format: an
`error` with that id if wrong), then queued and spoken in order, one at a time, each through
SpeechService with its own admission slot: `chunk` messages (base64 audio, `index` from 0, `is_last`
on the final one) as the audio is synthesized, then `done` with the audio's `duration_seconds`.

Chunks: `audio.chunk_size_ms` of audio each (default 100; the last may be shorter; with `format: wav`
the first also carries the 44-byte header, so the chunks joined are one WAV file); `audio.stream: false`
sends the whole audio as one chunk when synthesis ends, its JSON text built while the audio comes
(`whole_chunk`), so a socket holds about one copy of what it returns. `set_voice` sets the server-wide
default voice (as POST /api/voice/default does) and is answered with `voice_set`.

Every refusal is `{"type": "error", "id": <the message's id or null>, "message", "code"}`; the socket stays
usable. Credentials, the message-size bound and the idle timeout are the other sockets' (`WsChannel`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import WebSocket

from app.chatterbox.protocol import (
    CLIENT_TYPES,
    Chunk,
    ClientMessage,
    Done,
    Error,
    Ready,
    Say,
    SetVoice,
    VoiceSet,
)
from app.chatterbox.serving import (
    device_of,
    format_of,
    loaded_models,
    set_default_voice,
    speech_params,
)
from app.sockets.protocol import ProtocolError
from app.sockets.session import IdleTimeout, SocketSession
from app.speech.serving import audio_body, open_with_encoder
from engine.errors import Overloaded, SpeechError
from engine.service import SpeechParams

log = logging.getLogger("app.chatterbox")

DEFAULT_CHUNK_MS = 100
WAV_HEADER_BYTES = 44  # app.audio.encoding.WavEncoder's header

Job = Callable[[], Awaitable[None]]


def _id_of(raw: str | bytes) -> str | None:
    """The `id` of a message we could not use, so the client can tell which request failed."""
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


class ChatterboxSession(SocketSession):
    def __init__(self, socket: WebSocket, settings: Any):
        app = socket.app
        super().__init__(socket, app.state.service, settings, app.state.api_keys)
        self.app = app
        self.max_queued = settings.ws_max_queued_utterances
        self.conn_id = f"cb_{uuid.uuid4().hex[:12]}"
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._running = False
        self._worker: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return self._running or not self._jobs.empty()

    async def run(self) -> None:
        if not await self.open(lambda message: Error(id=None, message=message, code="invalid_api_key")):
            return
        self._worker = asyncio.create_task(self._work())
        try:
            await self.channel.send(Ready(models=loaded_models(self.service), device=device_of(self.service)))
            while not self.channel.closed:
                raw = await self.channel.receive(busy=lambda: self.busy)
                if raw is None:
                    break
                try:
                    await self._handle(self.channel.parse(raw, ClientMessage, CLIENT_TYPES))
                except ProtocolError as e:
                    await self.channel.send(Error(id=_id_of(raw), message=e.message, code="invalid_request"))
        except IdleTimeout:
            await self.channel.send(Error(id=None, code="idle_timeout",
                                          message=f"no message for {self.channel.idle_timeout:g}s; closing"))
            await self.channel.close(1000, "idle")
        finally:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _handle(self, message: Say | SetVoice) -> None:
        try:
            if isinstance(message, SetVoice):
                chosen = set_default_voice(self.app, self.service, message.voice_path)
                await self.channel.send(VoiceSet(voice_path=chosen.voice_path, voice=chosen.voice, id=message.id))
            else:
                self._say(message)
        except SpeechError as e:
            await self.channel.send(Error(id=message.id, message=e.message, code=e.code, retry_after=e.retry_after))

    def _say(self, say: Say) -> None:
        fmt, rate = format_of(say, "pcm_s16le")
        params = speech_params(say, self.app, self.service, f"{self.conn_id}-{say.id}", fmt)
        if self._jobs.qsize() >= self.max_queued:
            raise Overloaded(f"too many requests queued on this socket ({self.max_queued}); wait for a done")
        self._jobs.put_nowait(lambda: self._speak(say, params, fmt, rate))

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            self._running = True
            try:
                await job()
            finally:
                self._running = False
                self.channel.touch()  # the idle clock starts when the audio is out, not when the say came
            if self.channel.closed:
                return

    async def _speak(self, say: Say, params: SpeechParams, fmt: str, rate: int) -> None:
        audio = say.audio
        streamed = audio.stream if audio else True
        size = max(2, rate * (audio and audio.chunk_size_ms or DEFAULT_CHUNK_MS) // 1000 * 2)
        try:
            stream, encoder = await open_with_encoder(self.service, params, fmt, rate)
        except SpeechError as e:
            await self.channel.send(Error(id=say.id, message=e.message, code=e.code, retry_after=e.retry_after))
            return
        body = audio_body(stream, fmt, 1.0, encoder)
        try:
            if streamed:
                sent = await self._stream(say.id, body, size, WAV_HEADER_BYTES if fmt == "wav" else 0)
            else:
                sent = await self.channel.send_text(await whole_chunk(say.id, body))
            if not sent:
                return  # the client is gone: closing the body stops the synthesis
            await self.channel.send(Done(id=say.id, duration_seconds=round(stream.audio_seconds, 3)))
        except SpeechError as e:
            await self.channel.send(Error(id=say.id, message=e.message, code=e.code))
        except Exception:  # noqa: BLE001 - the client hears about it, the socket survives
            log.exception("chatterbox say %s failed", params.request_id)
            await self.channel.send(Error(id=say.id, message="internal error during synthesis", code="internal_error"))
        finally:
            await body.aclose()  # type: ignore[attr-defined]

    async def _stream(self, say_id: str, body: AsyncIterator[bytes], size: int, first: int) -> bool:
        """`chunk`s of `size` bytes as the audio comes (the first `first` bytes longer: the WAV header)."""
        chunks = _Chunks(self.channel, say_id)
        buffer = bytearray()
        async for data in body:
            buffer += data
            while len(buffer) >= size + first:
                cut, first = size + first, 0
                piece = bytes(buffer[:cut])
                del buffer[:cut]
                if not await chunks.push(piece):
                    return False
        return await chunks.finish(bytes(buffer))


async def whole_chunk(say_id: str, body: AsyncIterator[bytes]) -> str:
    """`audio.stream: false`: the JSON text of the one `chunk` (index 0, is_last), base64-encoding each piece
    of audio into it as it comes (a remainder under 3 bytes waits for the next piece). What a socket holds is
    that text, once; collecting the audio, then its base64, then the message and its JSON held ~7 copies."""
    template = msgspec.json.encode(Chunk(id=say_id, index=0, data="", is_last=True))
    at = template.rindex(b'"data":""') + len(b'"data":"')  # the id before it is escaped: no quote of its own
    frame = bytearray(template[:at])
    rest = b""
    async for data in body:
        if rest:
            data = rest + data
        cut = len(data) - len(data) % 3
        frame += base64.b64encode(memoryview(data)[:cut])
        rest = data[cut:]
    frame += base64.b64encode(rest) + template[at:]
    return frame.decode()  # UTF-8: the id may be any text; the bytearray goes when this returns


class _Chunks:
    """`chunk` messages of one say: each held back until the next exists, so the last says `is_last`."""

    def __init__(self, channel: Any, say_id: str):
        self.channel = channel
        self.id = say_id
        self.index = 0
        self.held: bytes | None = None

    async def push(self, piece: bytes) -> bool:
        sent = self.held is None or await self._send(self.held, last=False)
        self.held = piece
        return sent

    async def finish(self, tail: bytes) -> bool:
        if tail:
            if not await self.push(tail):
                return False
        return self.held is None or await self._send(self.held, last=True)

    async def _send(self, data: bytes, last: bool) -> bool:
        chunk = Chunk(id=self.id, index=self.index, data=base64.b64encode(data).decode(), is_last=last)
        self.index += 1
        return await self.channel.send(chunk)
