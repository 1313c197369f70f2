"""One Wyoming connection (Home Assistant's TTS): describe, synthesize, and streamed synthesis.

Events are read by the library's loop (`AsyncEventHandler.run`) and answered by one worker task per
connection, in the order they came: the read loop keeps reading while audio goes out, so a client
that leaves is noticed at once and its engine stream closed (its admission slot freed). Every
utterance goes through SpeechService like HTTP and the sockets: same voices, admission, priority
(interactive), deadline and metrics (route "wyoming").

- `describe` → `info`: one TTS program listing every voice, `supports_synthesize_streaming`.
- `synthesize` → `audio-start` (24 kHz, 16-bit, mono), `audio-chunk`s as the engine makes them,
  `audio-stop`.
- `synthesize-start`, `synthesize-chunk`…, `synthesize-stop` → each sentence as soon as
  IncrementalSegmenter completes it: `audio-start`, chunks, `audio-stop`; then `synthesize-stopped`.
  The plain `synthesize` Home Assistant also sends with the whole text (inside the session, or right
  after it) is ignored, as wyoming-piper does.

Refusals (unknown voice, busy server, bad language) are `error` events; the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from app.ops.metrics import GatewayMetrics
from engine import limits
from engine.base import SAMPLE_RATE, Priority, Voice
from engine.errors import DeadlineExceeded, InvalidRequest, Overloaded, SpeechError, Unavailable, VoiceNotFound
from engine.languages import LANGUAGES, language_of_tag
from engine.service import SpeechParams, SpeechService
from engine.text import IncrementalSegmenter

log = logging.getLogger("app.wyoming")

PROGRAM = "qwen-speech-gateway"
VERSION = "0.1.0"
ATTRIBUTION = Attribution(name="Qwen Speech Gateway", url="https://github.com/QwenLM/Qwen3-TTS")
WIDTH, CHANNELS = 2, 1
MAX_CHUNK_SAMPLES = 4096  # ~170 ms per audio-chunk event
ROUTE = "wyoming"
# ISO codes Home Assistant matches a pipeline's language against (LANGUAGES without "auto").
_ISO = {"chinese": "zh", "english": "en", "german": "de", "italian": "it", "portuguese": "pt", "spanish": "es",
        "japanese": "ja", "korean": "ko", "french": "fr", "russian": "ru"}
ALL_LANGUAGES = [_ISO[name] for name in LANGUAGES if name in _ISO]

Job = Callable[[], Awaitable[None]]


def error_code(exc: SpeechError) -> str:
    for kind, code in (
        (VoiceNotFound, "VoiceNotFoundError"),
        (Overloaded, "ServerBusyError"),
        (Unavailable, "EngineUnavailableError"),
        (DeadlineExceeded, "TimeoutError"),
        (InvalidRequest, "InvalidRequestError"),
    ):
        if isinstance(exc, kind):
            return code
    return "SynthesisError"


def error_text(exc: SpeechError) -> str:
    if isinstance(exc, Overloaded):
        retry = f" in {exc.retry_after:g}s" if exc.retry_after else " shortly"
        return f"the speech server is busy ({exc.message}); try again{retry}"
    return exc.message


def voice_languages(voice: Voice) -> list[str]:
    code = _ISO.get(voice.language)
    return [code] if code else list(ALL_LANGUAGES)


def describe(service: SpeechService) -> Info:
    voices = [
        TtsVoice(
            name=v.id,
            description=v.description or (v.name if v.name != v.id else f"{v.name} ({v.kind}, {v.engine})"),
            attribution=ATTRIBUTION,
            installed=True,
            version=VERSION,
            languages=voice_languages(v),
        )
        for v in service.registry.list()
    ]
    program = TtsProgram(
        name=PROGRAM,
        description="Qwen Speech Gateway: Qwen3-TTS and the embedded CPU engine",
        attribution=ATTRIBUTION,
        installed=True,
        version=VERSION,
        voices=voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _Choice:
    """What a synthesize / synthesize-start asked for: voice and language, checked up front."""

    def __init__(self, service: SpeechService, voice: SynthesizeVoice | None):
        name = (voice.name or voice.speaker) if voice else None
        self.voice = service.registry.resolve(name).id  # VoiceNotFound: reported as an error event
        self.language = language_of_tag(voice.language if voice else None)


class SpeechEventHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: SpeechService,
                 max_segment_chars: int = 300, idle_timeout: float | None = None):
        super().__init__(reader, writer)
        self.service = service
        self.max_segment_chars = max_segment_chars
        self.idle_timeout = idle_timeout
        self.conn_id = f"wy_{uuid.uuid4().hex[:12]}"
        self._jobs: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._current: asyncio.Task | None = None
        self._count = 0
        # streaming session
        self._segmenter: IncrementalSegmenter | None = None
        self._choice: _Choice | None = None
        self._session_failed = False
        self._streamed_text: str | None = None  # the text of the session just stopped (compat synthesize)
        self._flush_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """The library's read loop, plus an idle timeout: a client that sends nothing while nothing is
        being spoken for it is disconnected (a listener waiting for long audio is not idle)."""
        GatewayMetrics.label_route(ROUTE, self.conn_id)  # this task's context: the worker inherits it
        self._worker = asyncio.create_task(self._work())
        self._is_running = True
        reading: asyncio.Task | None = None
        try:
            while self._is_running:
                # One read task survives a timeout: cancelling a half-read event would lose its bytes.
                reading = reading or asyncio.create_task(async_read_event(self.reader))
                done, _ = await asyncio.wait({reading}, timeout=self.idle_timeout)
                if not done:
                    if self._jobs or (self._current is not None and not self._current.done()):
                        continue
                    log.info("wyoming %s: idle for %.0f s, closing", self.conn_id, self.idle_timeout)
                    limits.hit("wyoming_idle")
                    break
                event, reading = reading.result(), None
                if event is None or not await self.handle_event(event):
                    break
        finally:
            if reading is not None:
                reading.cancel()
            await self.disconnect()
            self.writer.close()

    async def disconnect(self) -> None:
        """The client left (or the server stops): drop the queue, cancel the utterance in flight."""
        self._cancel_flush_timer()
        self._jobs.clear()
        tasks = [t for t in (self._current, self._worker) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()  # the engine stream is closed in _speak's finally: the slot is free again
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- events in ------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        streamed, self._streamed_text = self._streamed_text, None
        try:
            if Describe.is_type(event.type):
                self._enqueue(self._send_info)
            elif Synthesize.is_type(event.type):
                synthesize = Synthesize.from_event(event)
                if self._segmenter is not None or (streamed is not None and _same(streamed, synthesize.text)):
                    return True  # the compatibility copy of a streamed text: already spoken
                self._synthesize(synthesize)
            elif SynthesizeStart.is_type(event.type):
                self._start(SynthesizeStart.from_event(event))
            elif SynthesizeChunk.is_type(event.type):
                self._chunk(SynthesizeChunk.from_event(event).text)
            elif SynthesizeStop.is_type(event.type):
                self._stop()
            else:
                log.debug("wyoming: ignored event %s", event.type)
        except SpeechError as e:
            self._enqueue(self._error_job(e))
        return True

    def _synthesize(self, synthesize: Synthesize) -> None:
        choice = _Choice(self.service, synthesize.voice)
        text = synthesize.text
        self._enqueue(lambda: self._speak(text, choice))

    def _start(self, start: SynthesizeStart) -> None:
        if self._segmenter is not None:
            self._stop(announce=False)  # a new session before the last one's stop: finish that one first
        self._segmenter = IncrementalSegmenter(max_chars=self.max_segment_chars)
        self._session_text: list[str] = []
        self._session_failed = False
        try:
            self._choice = _Choice(self.service, start.voice)
        except SpeechError:
            self._session_failed = True  # the error goes out now; the chunks of this session are dropped
            raise

    def _chunk(self, text: str) -> None:
        if self._segmenter is None:
            self._start(SynthesizeStart())  # chunks without a start: a session with the defaults
        assert self._segmenter is not None
        self._session_text.append(text)
        if self._session_failed:
            return
        self._speak_all(self._segmenter.push(text))
        self._arm_flush_timer(self._segmenter)

    def _stop(self, announce: bool = True) -> None:
        segmenter = self._segmenter
        if segmenter is None:
            self._enqueue(self._send_event(SynthesizeStopped().event()))
            return
        self._cancel_flush_timer()
        if not self._session_failed:
            self._speak_all(segmenter.finish())
        self._segmenter = None
        if announce:
            self._streamed_text = "".join(self._session_text)
            self._enqueue(self._send_event(SynthesizeStopped().event()))

    def _speak_all(self, sentences: list[str]) -> None:
        choice = self._choice
        assert choice is not None
        for sentence in sentences:
            if any(ch.isalnum() for ch in sentence):
                self._enqueue(lambda s=sentence: self._speak(s, choice))

    def _arm_flush_timer(self, segmenter: IncrementalSegmenter) -> None:
        self._cancel_flush_timer()
        if segmenter.pending.strip():
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(segmenter.idle_flush_s + 0.02, self._idle_flush, segmenter)

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _idle_flush(self, segmenter: IncrementalSegmenter) -> None:
        self._flush_timer = None
        if segmenter is self._segmenter and not self._session_failed:
            self._speak_all(segmenter.poll())

    # -- events out (the worker, in order) ------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        self._jobs.append(job)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            while not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            job = self._jobs.popleft()
            self._current = asyncio.create_task(job())
            try:
                await self._current
            except ConnectionError as e:  # the client is gone: nothing more to send
                log.debug("wyoming %s: send failed: %r", self.conn_id, e)
                self._jobs.clear()
                return
            except asyncio.CancelledError:
                if self._current.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    continue
                raise
            finally:
                self._current = None

    def _send_event(self, event: Event) -> Job:
        async def send() -> None:
            await self.write_event(event)
        return send

    async def _send_info(self) -> None:
        await self.write_event(describe(self.service).event())

    def _error_job(self, exc: SpeechError) -> Job:
        return self._send_event(Error(text=error_text(exc), code=error_code(exc)).event())

    async def _speak(self, text: str, choice: _Choice) -> None:
        self._count += 1
        params = SpeechParams(text=text, voice=choice.voice, language=choice.language,
                              priority=Priority.INTERACTIVE, request_id=f"{self.conn_id}-{self._count}",
                              labels={"format": "pcm"})
        try:
            stream = await self.service.open(params)
        except SpeechError as e:
            await self.write_event(Error(text=error_text(e), code=error_code(e)).event())
            return
        started = False
        try:
            async with contextlib.aclosing(aiter(stream)) as audio:
                async for chunk in audio:
                    if not started:
                        await self.write_event(AudioStart(rate=chunk.sample_rate, width=WIDTH,
                                                          channels=CHANNELS).event())
                        started = True
                    samples = chunk.samples
                    for i in range(0, len(samples), MAX_CHUNK_SAMPLES):
                        await self.write_event(AudioChunk(rate=chunk.sample_rate, width=WIDTH, channels=CHANNELS,
                                                          audio=pcm16(samples[i:i + MAX_CHUNK_SAMPLES])).event())
            if not started:
                await self.write_event(AudioStart(rate=SAMPLE_RATE, width=WIDTH, channels=CHANNELS).event())
            await self.write_event(AudioStop().event())
        except ConnectionError:
            raise  # the client is gone; the worker stops
        except Exception as e:  # noqa: BLE001 - the client hears about it, the connection survives
            if not isinstance(e, SpeechError) or e.status >= 500:
                log.warning("wyoming utterance %s failed: %r", params.request_id, e)
            if started:
                await self.write_event(AudioStop().event())
            if isinstance(e, SpeechError):
                await self.write_event(Error(text=error_text(e), code=error_code(e)).event())
            else:
                await self.write_event(Error(text="internal error during synthesis", code="SynthesisError").event())
        finally:
            await stream.aclose()


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())
