"""TranscriptionService: the recognizer behind its own admission queue, run off the event loop.

Transcriptions take slots from their own `AdmissionQueue` (`--asr-max-concurrent`), never from the
speech engines' queues: a flood of uploads to transcribe cannot keep a voice from speaking, nor a busy
voice a transcription from starting. The recognizer's calls run on threads, one Whisper segment at a
time, so a client that goes away stops the work at the next segment, and a slot stays held until its
thread has really finished (a cancelled request never lets more recognitions run than there are slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import numpy as np

from ..admission import AdmissionQueue, Slot
from ..base import Priority
from ..errors import InvalidRequest, Overloaded, Unavailable
from .languages import language_code
from .recognizer import Recognizer, resolve_model
from .transcript import Segment, Transcript

log = logging.getLogger(__name__)
AudioLoader = Callable[[], tuple[np.ndarray, int]]


class TranscriptionObserver(Protocol):
    """Told once about every transcription, on the event loop (metrics and logs hang here).

    outcome: ok | rejected (refused before running: busy, bad argument, no model) | error | cancelled."""

    def transcribed(self, *, task: str, audio_seconds: float, seconds: float, outcome: str,
                    error: BaseException | None) -> None: ...


class TranscriptStream:
    """An admitted transcription: iterate for segments; `aclose()` stops it and frees the slot."""

    def __init__(self, service: TranscriptionService, slot: Slot, task: str, requested_at: float):
        self._service = service
        self._slot = slot
        self.task = task
        self.audio_seconds = 0.0  # known once the audio is loaded
        self.requested_at = requested_at
        self.language = ""
        self.segments: list[Segment] = []  # those handed out so far
        self._iterator: Iterator[Segment] | None = None
        self._running: asyncio.Future[Any] | None = None
        self._first: Segment | None = None
        self._done = False
        self._closed = False
        self.error: BaseException | None = None

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """One step on a thread. If the caller is cancelled meanwhile the step still finishes before the
        slot is given back (aclose waits for it), since a thread cannot be stopped halfway."""
        self._running = asyncio.get_running_loop().run_in_executor(None, fn)
        try:
            return await asyncio.shield(self._running)
        finally:
            if self._running.done():
                self._running = None

    async def _start(self, load: AudioLoader, options: dict[str, Any]) -> None:
        recognizer = self._service.recognizer
        audio, rate = await self._call(load)
        self.audio_seconds = len(audio) / rate if rate > 0 else 0.0
        run = await self._call(lambda: recognizer.recognize(audio, rate, **options))
        self.language, self._iterator = run.language, run.segments
        self._first = await self._next()

    async def _next(self) -> Segment | None:
        assert self._iterator is not None
        iterator = self._iterator
        return await self._call(lambda: next(iterator, None))

    def __aiter__(self) -> AsyncIterator[Segment]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Segment]:
        try:
            segment, self._first = self._first, None
            while segment is not None:
                self.segments.append(segment)
                yield segment
                segment = await self._next()
            self._done = True
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as e:
            self.error = e
            raise
        finally:
            await self.aclose()

    async def transcript(self) -> Transcript:
        """Every segment, as one transcript (the rest of the stream is read first)."""
        async for _ in self:
            pass
        return Transcript(language=self.language, duration=self.audio_seconds, segments=list(self.segments))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        outcome = "ok" if self._done else "error" if self.error is not None else "cancelled"
        self._free()
        self._service._notify(self.task, self.audio_seconds, time.monotonic() - self.requested_at, outcome,
                              self.error)

    def _free(self) -> None:
        """Stop the decoding and give the slot back, once the step in flight (if any) has ended."""
        iterator, running = self._iterator, self._running

        def finish(_: object = None) -> None:
            if iterator is not None and hasattr(iterator, "close"):
                with contextlib.suppress(Exception):
                    iterator.close()  # type: ignore[attr-defined]
            self._slot.release()

        if running is not None and not running.done():
            running.add_done_callback(finish)
        else:
            finish()


class TranscriptionService:
    def __init__(self, recognizer: Recognizer, *, max_concurrent: int = 1, max_queue: int = 32,
                 queue_timeout: float = 30.0, observer: TranscriptionObserver | None = None):
        self.recognizer = recognizer
        # reserved_interactive=0: bulk callers (if any) may use every recognizer slot; speech keeps its own.
        self.admission = AdmissionQueue(max_concurrent, max_queue, queue_timeout, reserved_interactive=0)
        self.observer = observer

    @property
    def model(self) -> str:
        return self.recognizer.config.model

    async def start(self, *, preload: bool = False) -> None:
        """Find the model now, so a wrong --asr-model shows in the log at start rather than at the first
        request; with `preload`, load it too. Never raises: the gateway speaks without a recognizer."""
        config = self.recognizer.config
        try:
            if preload:
                await asyncio.to_thread(self.recognizer.load)
            else:
                await asyncio.to_thread(resolve_model, config.model, config.allow_download)
        except Unavailable as e:
            log.warning("speech recognizer unavailable (transcriptions will answer 503): %s", e.message)

    async def open(self, audio: np.ndarray | AudioLoader, sample_rate: int = 0, *,
                   priority: Priority = Priority.INTERACTIVE, language: str | None = None, task: str = "transcribe",
                   prompt: str | None = None, temperature: float = 0.0, word_timestamps: bool = False,
                   beam_size: int | None = None) -> TranscriptStream:
        """Admit and start a transcription: the model is loaded, the arguments checked and the first segment
        decoded before this returns, so a caller can still answer with an error status (400, 429, 503).

        `audio`: samples at `sample_rate`, or a loader returning (samples, rate), e.g. decoding an upload:
        it runs on a thread once the slot is held, so a flood of uploads queues before it is decoded."""
        requested_at = time.monotonic()
        load: AudioLoader = audio if callable(audio) else (lambda: (audio, sample_rate))  # type: ignore[assignment]
        options = {"language": language, "task": task, "prompt": prompt, "temperature": temperature,
                   "word_timestamps": word_timestamps, "beam_size": beam_size}
        try:
            slot = await self.admission.acquire(priority)
        except BaseException as e:
            seconds = len(audio) / sample_rate if not callable(audio) and sample_rate > 0 else 0.0
            self._notify(task, seconds, time.monotonic() - requested_at, _refusal(e), e)
            raise
        stream = TranscriptStream(self, slot, task, requested_at)
        try:
            await stream._start(load, options)
        except BaseException as e:
            stream.error = e if not isinstance(e, asyncio.CancelledError) else None
            stream._closed = True  # counted here, once, as a refusal rather than a failure
            stream._free()
            self._notify(task, stream.audio_seconds, time.monotonic() - requested_at, _refusal(e), e)
            raise
        return stream

    async def transcribe(self, audio: np.ndarray | AudioLoader, sample_rate: int = 0, **options: Any) -> Transcript:
        """`open` and read to the end."""
        return await (await self.open(audio, sample_rate, **options)).transcript()

    async def transcript_of(self, audio: np.ndarray, sample_rate: int, language: str | None = None) -> str | None:
        """What a clone sample says, for an in-context clone: its text, or None when there are no words to
        be had (nothing heard, or a language this model does not know: an English-only model and a sample
        said to be Chinese). `language`: a code or a name ("english"); None or "auto" to detect it.
        A busy recognizer is a 429, as for any transcription: a weaker clone is never made silently."""
        try:
            code = language_code(language)
            transcript = await self.transcribe(audio, sample_rate, language=code)
        except InvalidRequest as e:
            log.info("clone sample not transcribed: %s", e.message)
            return None
        return transcript.text or None

    def _notify(self, task: str, audio_seconds: float, seconds: float, outcome: str,
                error: BaseException | None) -> None:
        if self.observer is None:
            return
        try:
            self.observer.transcribed(task=task, audio_seconds=audio_seconds, seconds=seconds, outcome=outcome,
                                      error=error)
        except Exception:  # noqa: BLE001 - observing must never break a transcription
            log.exception("transcription observer failed")

    def status(self) -> dict[str, Any]:
        r = self.recognizer
        return {"model": r.config.model, "loaded": r.loaded, "device": r.config.device,
                "compute_type": r.compute_type, "path": str(r.path) if r.path else None,
                "active": self.admission.active, "queued": self.admission.queued}

    def close(self) -> None:
        self.recognizer.close()


def _refusal(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, (InvalidRequest, Overloaded, Unavailable)):
        return "rejected"
    return "error"
