"""SpeechService: the one road from a request to audio, shared by HTTP and WebSocket routes.

resolve the voice → pick its engine → check it is ready → take an admission slot → start the
engine's stream → wait for the first chunk. Everything that can be refused is refused before the
caller commits to a response, so HTTP can still answer 400/404/429/503 with a real status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .admission import AdmissionQueue, Slot
from .asr.service import TranscriptionService
from .base import AudioChunk, Engine, EngineStatus, Priority, SamplingParams, SegmentEnd, SynthesisRequest, Voice
from .errors import InvalidRequest, Unavailable
from .registry import VoiceRegistry
from .words import SentenceWords, WordTimer
from .words.hearing import hearing

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 4  # streams an engine serves at once when neither the settings nor the engine say


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
    # A voice built for this request alone (an inline clone from `ref_audio`): used as is, not looked up.
    voice_override: Voice | None = None
    # Facts for observers (metrics, request logs), e.g. {"format": "mp3"}; synthesis never reads them.
    labels: Mapping[str, str] = field(default_factory=dict)
    # Word timestamps: the request field that asked for them (named when they cannot be had); None: not asked.
    # The stream then also yields each sentence's `SentenceWords` (see engine/words).
    timestamps: str | None = None


class SpeechObserver(Protocol):
    """Told about every synthesis the service handles, whatever the transport; metrics and logs hang here.

    Called on the event loop, so keep it quick; an exception raised by an observer is logged and
    swallowed, never allowed to fail the request. `finished` runs exactly once per opened stream.
    """

    def refused(self, params: SpeechParams, error: BaseException, requested_at: float) -> None: ...

    def opened(self, stream: SpeechStream) -> None: ...

    def finished(self, stream: SpeechStream) -> None: ...


class SpeechStream:
    """An admitted synthesis: iterate for chunks; `aclose()` cancels the engine and frees the slot.

    With a `timer` (word timestamps asked for), iterating also yields each sentence's `SentenceWords`,
    before any audio of the sentences after it.
    """

    def __init__(self, request: SynthesisRequest, chunks: AsyncIterator[AudioChunk | SegmentEnd], slot: Slot,
                 timer: WordTimer | None = None):
        self.request = request
        self.voice: Voice = request.voice
        self._chunks = chunks
        self._slot = slot
        self.timer = timer
        self._timed: AsyncGenerator[AudioChunk | SentenceWords, None] | None = None
        self._head: list[AudioChunk | SegmentEnd] = []  # read by _prime: marks of silent segments, first chunk
        self.started = time.monotonic()
        self.requested_at = self.started  # open() moves it back to include the admission wait
        self.first_audio_at: float | None = None
        self.ended_at: float | None = None
        self.audio_seconds = 0.0
        self.closed = False
        self.params: SpeechParams | None = None
        self.error: BaseException | None = None
        self._completed = False
        self._observer: SpeechObserver | None = None

    @property
    def outcome(self) -> str:
        """ok (ran to the end), error (the engine failed or the deadline passed), or cancelled (closed early)."""
        if self._completed:
            return "ok"
        return "error" if self.error is not None else "cancelled"

    async def _prime(self) -> None:
        async for item in self._chunks:
            self._head.append(item)
            if isinstance(item, AudioChunk):
                break
        self.first_audio_at = time.monotonic()

    @property
    def _silent(self) -> bool:
        return not any(isinstance(item, AudioChunk) for item in self._head)

    def __aiter__(self) -> AsyncIterator[AudioChunk | SentenceWords]:
        items = self._iterate()
        if self.timer is None:
            return items  # type: ignore[return-value]
        self._timed = self.timer.timed(items)
        return self._timed

    async def _iterate(self) -> AsyncIterator[AudioChunk | SegmentEnd]:
        try:
            head, self._head = self._head, []
            for item in head:
                if isinstance(item, AudioChunk):
                    self.audio_seconds += item.duration
                yield item
            async for item in self._chunks:
                if isinstance(item, AudioChunk):
                    self.audio_seconds += item.duration
                yield item
            self._completed = True
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the consumer went away: an outcome of "cancelled", not an error
        except BaseException as e:
            self.error = e
            raise
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ended_at = time.monotonic()
        try:
            # The word timer may be reading the engine from a task of its own: it stops that first (unless it
            # is what is closing us, at the end of the engine's stream).
            timed, self._timed = self._timed, None
            if timed is not None and not timed.ag_running:
                await timed.aclose()
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self._slot.release()
            if self._observer is not None:
                _notify(self._observer.finished, self)


class SpeechService:
    def __init__(
        self,
        engines: list[Engine],
        *,
        max_concurrent: int | None = 4,
        max_queue: int = 32,
        queue_timeout: float = 30.0,
        request_timeout: float = 300.0,
        observer: SpeechObserver | None = None,
        voice_map: dict[str, str] | None = None,
        transcriber: TranscriptionService | None = None,
    ):
        """`engines` in preference order (primary first); each gets its own admission queue of
        `max_concurrent` streams (None: the engine's `stream_slots`, else 4). `transcriber`:
        the speech recognizer (its own admission), for every door that hears as well as speaks; None
        without --asr-model."""
        self.observer = observer
        self.transcriber = transcriber
        self.engines = {e.name: e for e in engines}
        self.primary = engines[0]
        self.registry = VoiceRegistry(engines, voice_map)
        self.admission = {e.name: AdmissionQueue(max_concurrent or getattr(e, "stream_slots", DEFAULT_SLOTS),
                                                 max_queue, queue_timeout) for e in engines}
        self.request_timeout = request_timeout

    async def start(self) -> None:
        await asyncio.gather(*(e.start() for e in self.engines.values()))

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.engines.values()), return_exceptions=True)
        if self.transcriber is not None:
            self.transcriber.close()

    def status(self) -> list[EngineStatus]:
        return [e.status() for e in self.engines.values()]

    @property
    def ready(self) -> bool:
        return self.primary.status().ready

    async def open(self, params: SpeechParams) -> SpeechStream:
        """Admit and start a synthesis; raises SpeechError subclasses before any audio exists."""
        requested_at = time.monotonic()
        try:
            stream = await self._open(params)
        except BaseException as e:
            if self.observer is not None:
                _notify(self.observer.refused, params, e, requested_at)
            raise
        stream.params = params
        stream.requested_at = requested_at
        if self.observer is not None:
            stream._observer = self.observer
            _notify(self.observer.opened, stream)
        return stream

    async def _open(self, params: SpeechParams) -> SpeechStream:
        voice = params.voice_override or self.registry.resolve(params.voice, prefer=params.engine)
        engine = self.engines[voice.engine]
        status = engine.status()
        if not status.ready:
            raise Unavailable(f"engine {engine.name} not ready: {status.reason}", retry_after=5)
        timer = self._word_timer(params, engine, voice)
        request = SynthesisRequest(
            text=params.text,
            voice=voice,
            language=params.language,
            instructions=params.instructions,
            seed=params.seed,
            priority=params.priority,
            sampling=params.sampling,
            deadline=time.monotonic() + self.request_timeout,
            segment_marks=timer is not None,
            **({"request_id": params.request_id} if params.request_id else {}),
        )
        slot = await self.admission[engine.name].acquire(params.priority)
        try:
            chunks = engine.synthesize(request)
        except BaseException:
            slot.release()
            raise
        stream = SpeechStream(request, chunks, slot, timer)
        try:
            await stream._prime()
        except BaseException:
            await stream.aclose()
            raise
        if stream._silent:
            await stream.aclose()
            # Only the text can make a working engine say nothing (emoji, control or unpronounceable
            # characters): the caller's fault, not a server error.
            raise InvalidRequest(f"nothing in 'input' can be spoken by voice {voice.id!r}", param="input")
        return stream

    def require_word_timing(self, voice: Voice, param: str) -> None:
        """InvalidRequest naming `param` (the field that asked) and --asr-model when the words `voice` speaks
        cannot be timed: its engine does not time words itself and there is no speech recognizer."""
        if not getattr(self.engines[voice.engine], "times_words", False) and self.transcriber is None:
            raise InvalidRequest(f"word timestamps for voice {voice.id!r} need a speech recognizer, and this server "
                                 "has none: start it with --asr-model", param=param)

    def _word_timer(self, params: SpeechParams, engine: Engine, voice: Voice) -> WordTimer | None:
        """The request's word timer, or None when none was asked for; InvalidRequest when none can be had."""
        if params.timestamps is None:
            return None
        self.require_word_timing(voice, params.timestamps)
        if getattr(engine, "times_words", False):
            return WordTimer(params.text)
        assert self.transcriber is not None
        return WordTimer(params.text, hearing(self.transcriber))


def _notify(callback: Callable[..., None], *args: object) -> None:
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - observing must never break synthesis
        log.exception("speech observer %s failed", getattr(callback, "__qualname__", callback))
