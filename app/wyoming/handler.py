"""One Wyoming connection (Home Assistant's TTS): describe, synthesize, and streamed synthesis.

Two tasks per connection: the read loop (events in, bounded by `wire.read_event`) and one worker that
answers them in the order they came. The read loop keeps reading while audio goes out, so a client
that leaves is noticed at once and its engine stream closed (its admission slot freed). Every
utterance goes through SpeechService like HTTP and the sockets: same voices, admission, priority
(interactive), deadline and metrics (route "wyoming").

- `describe` → `info`: one TTS program listing every voice, `supports_synthesize_streaming`.
- `synthesize` → `audio-start` (24 kHz, 16-bit, mono), `audio-chunk`s as the engine makes them,
  `audio-stop`. Refused (unknown voice, busy server, text over 4,096 characters, nothing speakable)
  or failed: an `error`, then the connection is closed, as wyoming-piper does: Home Assistant's
  client ignores `error` and reads until `audio-stop` or the end of the connection.
- `synthesize-start`, `synthesize-chunk`…, `synthesize-stop` → each sentence as soon as
  IncrementalSegmenter completes it: `audio-start`, chunks, `audio-stop`; then `synthesize-stopped`.
  A refusal is an `error` and the session still ends with `synthesize-stopped`. The plain
  `synthesize` Home Assistant also sends with the whole text (inside the session, or right after
  it) is ignored, as wyoming-piper does.

What one connection may cost, whatever the client does: each write must make progress within the
send timeout (else the connection is aborted and its slot freed); the idle timer runs whenever the
server is not working for the client, also while a write waits on a client that does not read;
events answered later are bounded (reading pauses beyond `MAX_QUEUED_ANSWERS`, so TCP pushes back);
streamed text waiting to be spoken is bounded by `MAX_PENDING_CHARS` (the WebSocket text feed's
bound); the audio in flight is the one chunk being written, as the worker asks the engine stream for
the next chunk only once the last one is sent. A malformed event is an `error` and the connection
goes on; a stream that cannot be cut into events any more is answered once and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from app.ops.connection_guard import SendStalled
from app.ops.metrics import GatewayMetrics
from app.sockets.protocol import MAX_TEXT_CHARS
from app.sockets.session import MAX_PENDING_CHARS
from app.wyoming import wire
from app.wyoming.wire import FramingError, MalformedEvent, SynthesizeChunkData, SynthesizeData, SynthesizeStartData
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
MAX_QUEUED_ANSWERS = 16  # events waiting for their answer before reading pauses
ROUTE = "wyoming"
# ISO codes Home Assistant matches a pipeline's language against (LANGUAGES without "auto").
ISO_CODES = {"chinese": "zh", "english": "en", "german": "de", "italian": "it", "portuguese": "pt",
             "spanish": "es", "japanese": "ja", "korean": "ko", "french": "fr", "russian": "ru"}
assert set(ISO_CODES) == set(LANGUAGES) - {"auto"}

MALFORMED = "MalformedEventError"
TOO_MUCH_TEXT = "TooMuchTextError"

Job = Callable[[], Awaitable[bool | None]]  # False: the connection ends after it


@dataclass(frozen=True)
class ConnectionOptions:
    max_segment_chars: int = 300
    idle_timeout: float | None = None
    send_timeout: float = 30.0
    max_event_bytes: int = 65536
    language: str = "en"  # the ISO code a voice of language "auto" is advertised under


def advertised_language(tag: str) -> str:
    """The ISO code for `--wyoming-language`; SystemExit when it names no single language we speak."""
    try:
        language = language_of_tag(tag)
    except InvalidRequest as e:
        raise SystemExit(f"--wyoming-language {tag!r}: {e.message}") from None
    if language == "auto":
        raise SystemExit(f"--wyoming-language {tag!r}: name one language, e.g. en or de")
    return ISO_CODES[language]


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


def voice_languages(voice: Voice, default: str) -> list[str]:
    """One language per voice: Home Assistant derives a pipeline's default language from the set, so
    a voice that speaks any language (`auto`) is listed under the server's (`--wyoming-language`)."""
    return [ISO_CODES.get(voice.language, default)]


def describe(service: SpeechService, default_language: str) -> Info:
    voices = [
        TtsVoice(
            name=v.id,
            description=v.description or (v.name if v.name != v.id else f"{v.name} ({v.kind}, {v.engine})"),
            attribution=ATTRIBUTION,
            installed=True,
            version=VERSION,
            languages=voice_languages(v, default_language),
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


def _squeezed(text: str) -> bytes:
    # Whitespace-free: a streamed text's chunks hash to the same digest as the whole text sent again.
    return "".join(text.split()).encode()


class _Choice:
    """What a synthesize / synthesize-start asked for: voice and language, checked up front."""

    def __init__(self, service: SpeechService, voice: wire.VoiceChoice | None):
        name = (voice.name or voice.speaker) if voice else None
        self.voice = service.registry.resolve(name).id  # VoiceNotFound: reported as an error event
        # As the library reads it (SynthesizeVoice.from_dict): a language only picks when no name does.
        self.language = language_of_tag(voice.language if voice and not voice.name else None)


@dataclass
class _Job:
    run: Job
    sentence_chars: int | None = None  # a streamed sentence: counted as queued text, not as an answer


class WyomingConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: SpeechService,
                 options: ConnectionOptions):
        self.reader, self.writer = reader, writer
        self.service = service
        self.options = options
        self.conn_id = f"wy_{uuid.uuid4().hex[:12]}"
        self._jobs: deque[_Job] = deque()
        self._answers = 0
        self._queued_chars = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._reading: asyncio.Task | None = None
        self._working = False  # a job is running
        self._writing = False  # a write waits for the client to read
        self._active_at = time.monotonic()
        self._closing = False
        self._count = 0
        self._malformed_logged = False
        # streaming session
        self._segmenter: IncrementalSegmenter | None = None
        self._choice: _Choice | None = None
        self._session_failed = False
        self._session_digest = hashlib.sha256()
        self._streamed_digest: bytes | None = None  # the text of the session just stopped (compat synthesize)
        self._flush_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        GatewayMetrics.label_route(ROUTE, self.conn_id)  # this task's context: the worker inherits it
        self._worker = asyncio.create_task(self._work())
        try:
            await self._read_loop()
        finally:
            await self._end()

    def stop(self) -> None:
        """End the connection (server shutdown, or an answer after which the client must see the end)."""
        self._closing = True
        if self._reading is not None:
            self._reading.cancel()  # wakes the read loop, which then ends

    # -- events in ------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while not self._closing:
            if self._reading is None:
                self._reading = asyncio.create_task(self._next_event())
            # One read task survives an idle check: cancelling a half-read event would lose its bytes.
            done, _ = await asyncio.wait({self._reading}, timeout=self._idle_left())
            if not done:
                if self._idle():
                    log.info("wyoming %s: idle for %.0f s, closing", self.conn_id, self.options.idle_timeout)
                    limits.hit("wyoming_idle")
                    return
                continue
            reading, self._reading = self._reading, None
            if reading.cancelled():
                return
            try:
                event = reading.result()
            except FramingError as e:
                limits.hit("wyoming_bad_framing")
                log.info("wyoming %s: %s; connection dropped", self.conn_id, e)
                self._write_now(Error(text=f"{e}; closing the connection", code=MALFORMED).event())
                return
            except MalformedEvent as e:  # the event was cut out whole: the next one can be read
                self._malformed(e)
                continue
            except OSError:  # reset by the client
                return
            if event is None:
                return
            self._active_at = time.monotonic()
            self._handle(event)

    async def _next_event(self) -> Event | None:
        await self._room.wait()  # a client that sends faster than it reads answers waits here: TCP pushes back
        return await wire.read_event(self.reader, self.options.max_event_bytes)

    def _handle(self, event: Event) -> None:
        streamed, self._streamed_digest = self._streamed_digest, None
        kind = event.type
        try:
            if Describe.is_type(kind):
                self._answer(self._send_info)
            elif Synthesize.is_type(kind):
                self._synthesize(wire.fields(event, SynthesizeData), streamed)
            elif SynthesizeStart.is_type(kind):
                self._start(wire.fields(event, SynthesizeStartData))
            elif SynthesizeChunk.is_type(kind):
                self._chunk(wire.fields(event, SynthesizeChunkData).text)
            elif SynthesizeStop.is_type(kind):
                self._stop()
            else:
                log.debug("wyoming: ignored event %s", kind)
        except MalformedEvent as e:
            self._malformed(e)
        except SpeechError as e:
            self._answer(self._error_job(e))

    def _malformed(self, e: MalformedEvent) -> None:
        limits.hit("wyoming_malformed_event")
        # One line per connection: a client repeating its mistake does not fill the log.
        log.log(logging.DEBUG if self._malformed_logged else logging.INFO, "wyoming %s: %s", self.conn_id, e)
        self._malformed_logged = True
        self._answer(self._send_job(Error(text=str(e), code=MALFORMED).event()))

    def _synthesize(self, data: SynthesizeData, streamed: bytes | None) -> None:
        if self._segmenter is not None or (streamed is not None and streamed == _digest(data.text)):
            return  # the compatibility copy of a streamed text: already spoken
        try:
            if len(data.text) > MAX_TEXT_CHARS:
                raise InvalidRequest(f"text is {len(data.text)} characters, over the limit of {MAX_TEXT_CHARS} "
                                     "(the same as POST /v1/audio/speech); stream it with synthesize-start / "
                                     "synthesize-chunk or send it in parts", param="text")
            choice = _Choice(self.service, data.voice)
        except SpeechError as e:
            refusal = self._error_job(e)

            async def refuse() -> bool:
                await refusal()
                return False  # the answer to a plain synthesize ends with the connection

            self._answer(refuse)
            return
        text = data.text
        self._answer(lambda: self._speak(text, choice, plain=True))

    def _start(self, start: SynthesizeStartData) -> None:
        if self._segmenter is not None:
            self._stop(announce=False)  # a new session before the last one's stop: finish that one first
        self._segmenter = IncrementalSegmenter(max_chars=self.options.max_segment_chars)
        self._session_digest = hashlib.sha256()
        self._session_failed = False
        try:
            self._choice = _Choice(self.service, start.voice)
        except SpeechError:
            self._session_failed = True  # the error goes out now; the chunks of this session are dropped
            raise

    def _chunk(self, text: str) -> None:
        if self._segmenter is None:
            self._start(SynthesizeStartData())  # chunks without a start: a session with the defaults
        assert self._segmenter is not None
        self._session_digest.update(_squeezed(text))
        if self._session_failed:
            return
        waiting = len(self._segmenter.pending) + self._queued_chars
        if waiting + len(text) > MAX_PENDING_CHARS:
            limits.hit("wyoming_text_queue")
            self._session_failed = True
            self._cancel_flush_timer()
            # Told now, after the sentence in flight, not behind the queued ones it was refused for.
            self._answer(self._send_job(Error(
                text=f"more than {MAX_PENDING_CHARS} characters waiting to be spoken; the rest of this synthesis "
                     "is dropped (send text no faster than it can be spoken)", code=TOO_MUCH_TEXT).event()),
                first=True)
            return
        self._speak_all(self._segmenter.push(text))
        self._arm_flush_timer(self._segmenter)

    def _stop(self, announce: bool = True) -> None:
        segmenter = self._segmenter
        if segmenter is None:
            self._answer(self._send_job(SynthesizeStopped().event()))
            return
        self._cancel_flush_timer()
        if not self._session_failed:
            self._speak_all(segmenter.finish())
        self._segmenter = None
        if announce:
            self._streamed_digest = self._session_digest.digest()
            self._answer(self._send_job(SynthesizeStopped().event()))

    def _speak_all(self, sentences: list[str]) -> None:
        choice = self._choice
        assert choice is not None
        for sentence in sentences:
            if any(ch.isalnum() for ch in sentence):
                self._enqueue(_Job(lambda s=sentence: self._speak(s, choice, plain=False), len(sentence)))

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

    # -- idle -----------------------------------------------------------------------------------
    def _idle_left(self) -> float | None:
        if self.options.idle_timeout is None:
            return None
        return max(0.0, self._active_at + self.options.idle_timeout - time.monotonic())

    def _idle(self) -> bool:
        """True when the idle timeout has passed: no event in and no write out for that long, and the
        server is not working for the client (a long synthesis is not a silent client; a write waiting on
        a client that does not read is)."""
        if self._working and not self._writing:
            self._active_at = time.monotonic()
            return False
        return self._idle_left() == 0.0

    # -- events out (the worker, in order) ------------------------------------------------------
    def _answer(self, job: Job, first: bool = False) -> None:
        self._enqueue(_Job(job), first)

    def _enqueue(self, job: _Job, first: bool = False) -> None:
        if job.sentence_chars is None:
            self._answers += 1
            if self._answers >= MAX_QUEUED_ANSWERS:
                self._room.clear()
        else:
            self._queued_chars += job.sentence_chars
        if first:
            self._jobs.appendleft(job)
        else:
            self._jobs.append(job)
        self._wake.set()

    def _dequeue(self) -> _Job:
        job = self._jobs.popleft()
        if job.sentence_chars is None:
            self._answers -= 1
            if self._answers < MAX_QUEUED_ANSWERS:
                self._room.set()
        else:
            self._queued_chars -= job.sentence_chars
        return job

    async def _work(self) -> None:
        while True:
            while not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            job = self._dequeue()
            self._working = True
            try:
                keep_open = await job.run()
            except ConnectionError as e:  # gone, or not reading (SendStalled): nothing more to send
                log.debug("wyoming %s: send failed: %r", self.conn_id, e)
                self.stop()
                return
            except Exception as e:  # noqa: BLE001 - a bug: one line, and the connection ends rather than hangs
                log.warning("wyoming %s: answer failed: %r", self.conn_id, e)
                self.stop()
                return
            finally:
                self._working = False
            if keep_open is False:
                self.stop()
                return

    async def _send(self, event: Event) -> None:
        """Write one event; SendStalled (a ConnectionError) when the client read nothing for the send timeout."""
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.writer.write(wire.encode(event))
        self._writing = True
        try:
            async with asyncio.timeout(self.options.send_timeout):
                await self.writer.drain()
        except TimeoutError:
            limits.hit("wyoming_send_timeout")
            log.warning("wyoming %s: the client read nothing for %gs; connection aborted", self.conn_id,
                        self.options.send_timeout)
            self.writer.transport.abort()  # close() would wait for a buffer the client never drains
            raise SendStalled(f"no send progress for {self.options.send_timeout:g}s") from None
        finally:
            self._writing = False
        self._active_at = time.monotonic()

    def _write_now(self, event: Event) -> None:
        """A last word before the connection is dropped: buffered, not waited for."""
        if not self.writer.transport.is_closing():
            self.writer.write(wire.encode(event))

    def _send_job(self, event: Event) -> Job:
        async def send() -> None:
            await self._send(event)
        return send

    async def _send_info(self) -> None:
        await self._send(describe(self.service, self.options.language).event())

    def _error_job(self, exc: SpeechError) -> Job:
        return self._send_job(Error(text=error_text(exc), code=error_code(exc)).event())

    async def _speak(self, text: str, choice: _Choice, *, plain: bool) -> bool:
        """One utterance; False when it was refused or failed and `plain` (the connection then ends)."""
        self._count += 1
        params = SpeechParams(text=text, voice=choice.voice, language=choice.language,
                              priority=Priority.INTERACTIVE, request_id=f"{self.conn_id}-{self._count}",
                              labels={"format": "pcm"})
        try:
            stream = await self.service.open(params)
        except SpeechError as e:
            await self._send(Error(text=error_text(e), code=error_code(e)).event())
            return not plain
        started = False
        try:
            # The next chunk is asked for only once this one is written: no audio piles up here.
            async with contextlib.aclosing(aiter(stream)) as audio:
                async for chunk in audio:
                    if not started:
                        await self._send(AudioStart(rate=chunk.sample_rate, width=WIDTH, channels=CHANNELS).event())
                        started = True
                    samples = chunk.samples
                    for i in range(0, len(samples), MAX_CHUNK_SAMPLES):
                        await self._send(AudioChunk(rate=chunk.sample_rate, width=WIDTH, channels=CHANNELS,
                                                    audio=pcm16(samples[i:i + MAX_CHUNK_SAMPLES])).event())
            if not started:
                await self._send(AudioStart(rate=SAMPLE_RATE, width=WIDTH, channels=CHANNELS).event())
            await self._send(AudioStop().event())
            return True
        except ConnectionError:
            raise  # the client is gone; the worker stops
        except Exception as e:  # noqa: BLE001 - the client hears about it
            if not isinstance(e, SpeechError) or e.status >= 500:
                log.warning("wyoming utterance %s failed: %r", params.request_id, e)
            if started:
                await self._send(AudioStop().event())
            if isinstance(e, SpeechError):
                await self._send(Error(text=error_text(e), code=error_code(e)).event())
            else:
                await self._send(Error(text="internal error during synthesis", code="SynthesisError").event())
            return not plain
        finally:
            await stream.aclose()

    # -- the end --------------------------------------------------------------------------------
    async def _end(self) -> None:
        """The client left, was dropped, or the server stops: drop the queue, cancel the utterance in flight
        (its engine stream closes in `_speak`'s finally: the slot is free again), close the socket."""
        self._closing = True
        self._cancel_flush_timer()
        self._jobs.clear()
        tasks = [t for t in (self._worker, self._reading) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # collected: no "exception never retrieved"
        self.writer.close()
        try:
            async with asyncio.timeout(self.options.send_timeout):
                await self.writer.wait_closed()  # what is buffered (a last error) goes out first
        except (TimeoutError, OSError):
            self.writer.transport.abort()


def _digest(text: str) -> bytes:
    return hashlib.sha256(_squeezed(text)).digest()
