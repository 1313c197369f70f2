"""SpeechService: the one road from a request to audio, shared by HTTP and WebSocket routes.

resolve the voice → pick its engine → check it is ready → take an admission slot → start the
engine's stream → wait for the first chunk. Everything that can be refused is refused before the
caller commits to a response, so HTTP can still answer 400/404/429/503 with a real status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .admission import AdmissionQueue, Slot
from .base import AudioChunk, Engine, EngineStatus, Priority, SamplingParams, SynthesisRequest, Voice
from .errors import EngineFailure, Unavailable
from .registry import VoiceRegistry


@dataclass(frozen=True, kw_only=True)
class SpeechParams:
    """What a route asks for, before voice resolution."""

    text: str
    voice: str | None = None
    language: str = "auto"
    instructions: str | None = None
    seed: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: Priority = Priority.INTERACTIVE
    request_id: str = ""
    engine: str | None = None  # prefer this engine's voices (the request's `model` named it)


class SpeechStream:
    """An admitted synthesis: iterate for chunks; `aclose()` cancels the engine and frees the slot."""

    def __init__(self, request: SynthesisRequest, chunks: AsyncIterator[AudioChunk], slot: Slot):
        self.request = request
        self.voice: Voice = request.voice
        self._chunks = chunks
        self._slot = slot
        self._first: AudioChunk | None = None
        self.started = time.monotonic()
        self.first_audio_at: float | None = None
        self.audio_seconds = 0.0
        self.closed = False

    async def _prime(self) -> None:
        try:
            self._first = await anext(self._chunks)
        except StopAsyncIteration:
            self._first = None
        self.first_audio_at = time.monotonic()

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AudioChunk]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self.audio_seconds += first.duration
                yield first
            async for chunk in self._chunks:
                self.audio_seconds += chunk.duration
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self._slot.release()


class SpeechService:
    def __init__(
        self,
        engines: list[Engine],
        *,
        max_concurrent: int = 4,
        max_queue: int = 32,
        queue_timeout: float = 30.0,
        request_timeout: float = 300.0,
    ):
        """`engines` in preference order (primary first); each gets its own admission queue."""
        self.engines = {e.name: e for e in engines}
        self.primary = engines[0]
        self.registry = VoiceRegistry(engines)
        self.admission = {e.name: AdmissionQueue(max_concurrent, max_queue, queue_timeout) for e in engines}
        self.request_timeout = request_timeout

    async def start(self) -> None:
        await asyncio.gather(*(e.start() for e in self.engines.values()))

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.engines.values()), return_exceptions=True)

    def status(self) -> list[EngineStatus]:
        return [e.status() for e in self.engines.values()]

    @property
    def ready(self) -> bool:
        return self.primary.status().ready

    async def open(self, params: SpeechParams) -> SpeechStream:
        """Admit and start a synthesis; raises SpeechError subclasses before any audio exists."""
        voice = self.registry.resolve(params.voice, prefer=params.engine)
        engine = self.engines[voice.engine]
        status = engine.status()
        if not status.ready:
            raise Unavailable(f"engine {engine.name} not ready: {status.reason}", retry_after=5)
        request = SynthesisRequest(
            text=params.text,
            voice=voice,
            language=params.language,
            instructions=params.instructions,
            seed=params.seed,
            priority=params.priority,
            sampling=params.sampling,
            deadline=time.monotonic() + self.request_timeout,
            **({"request_id": params.request_id} if params.request_id else {}),
        )
        slot = await self.admission[engine.name].acquire(params.priority)
        try:
            chunks = engine.synthesize(request)
        except BaseException:
            slot.release()
            raise
        stream = SpeechStream(request, chunks, slot)
        try:
            await stream._prime()
        except BaseException:
            await stream.aclose()
            raise
        if stream._first is None:
            await stream.aclose()
            raise EngineFailure("the engine produced no audio for this input")
        return stream
