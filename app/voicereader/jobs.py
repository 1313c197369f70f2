"""Speak jobs, the events they send to every events socket, and the warmup, for one app.

VoiceReader's tts-engine is a single-user sidecar: one job speaks at a time and its events go to
every connected events socket. Decisions:

- A speak while a job runs is queued (FIFO, at most `--ws-max-queued-utterances` waiting; beyond,
  429 RATE_LIMITED); `POST /v1/cancel` without a job id stops the current job and drops the queue.
- A job's text is cut into chunks of whole sentences (`chunk_max_chars`, default
  `--max-segment-chars`); each chunk is one `SpeechService.open` (its own admission slot, interactive
  priority, route label "voicereader"), so a job holds a slot only while a chunk is synthesized and
  never after it ends or is cancelled. The first chunk of a job that starts at once is opened
  before `/v1/speak` answers, so a busy server, an unknown voice or a loading engine is an HTTP error.
- Every event of a job is sent by the job's own task, the terminal one last: after JOB_CANCELED
  no AUDIO_CHUNK of that job follows.
- No events socket connected: events are buffered (VoiceReader connects right after `/v1/speak`
  answers) and replayed to the next socket that connects. The buffer holds at most
  BACKLOG_AUDIO_SECONDS of audio; a job that would exceed it stops (slot freed) with JOB_ERROR
  NO_LISTENER. Buffered events older than BACKLOG_TTL_SECONDS are dropped. Nothing ever waits for a
  listener.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ops.metrics import GatewayMetrics
from app.sockets.audio import PcmFramer
from app.sockets.session import WsChannel
from app.voicereader.protocol import (
    NO_LISTENER,
    AudioChunk,
    AudioPayload,
    JobCanceled,
    JobDone,
    JobError,
    JobStarted,
    VoiceReaderError,
    VoiceReaderWarmupState,
    error_code,
)
from engine.base import Priority, Voice
from engine.errors import Overloaded, SpeechError
from engine.service import SpeechParams, SpeechService
from engine.text import split_sentences

log = logging.getLogger("app.voicereader")

ROUTE = "voicereader"  # the metrics route label of every synthesis a job or the warmup opens
BACKLOG_AUDIO_SECONDS = 120.0
BACKLOG_TTL_SECONDS = 60.0
KEEP_FINISHED_JOBS = 32  # finished jobs remembered for `cancel` (answered "not running", not 404)
WARMUP_TEXT = "Engine warmup sentence."


def text_chunks(text: str, max_chars: int) -> list[str]:
    """Whole sentences (split_sentences) packed greedily into chunks of at most `max_chars`."""
    chunks: list[str] = []
    for sentence in split_sentences(text, max_chars):
        if chunks and len(chunks[-1]) + 1 + len(sentence) <= max_chars:
            chunks[-1] += " " + sentence
        else:
            chunks.append(sentence)
    return chunks


@dataclass(eq=False)
class Job:
    id: str
    voice: Voice
    voice_id: str  # as the client named it ("0" for the default)
    language: str
    chunks: list[str]
    rate: float = 1.0
    volume: float = 1.0
    state: str = "queued"  # queued → running → done | canceled | failed
    canceled: bool = False
    audio_chunks: int = 0
    audio_seconds: float = 0.0
    admitted: asyncio.Future | None = None  # set when a /v1/speak waits for the first chunk's admission
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "canceled", "failed")


class NoListener(Exception):
    """The events buffer is full and no socket is connected: the job stops."""


class Warmup:
    """`POST /v1/warmup`: one short synthesis through the service, drained; its state for /v1/health."""

    def __init__(self, service: SpeechService):
        self.service = service
        self.status = "idle"
        self.runs = 0
        self.last_duration_ms: float | None = None
        self.last_error: str | None = None
        self.last_exception: SpeechError | None = None
        self._task: asyncio.Task | None = None

    def state(self) -> VoiceReaderWarmupState:
        return VoiceReaderWarmupState(status=self.status, runs=self.runs,  # type: ignore[arg-type]
                           last_duration_ms=self.last_duration_ms, last_error=self.last_error)

    def start(self, force: bool) -> asyncio.Task | None:
        """The running warmup, or a new one (none when already ready and not forced)."""
        if self._task is not None and not self._task.done():
            return self._task
        if self.status == "ready" and not force:
            return None
        self.status = "running"
        self._task = asyncio.create_task(self._run())
        return self._task

    async def _run(self) -> None:
        GatewayMetrics.label_route(ROUTE, "warmup")
        started = time.monotonic()
        self.runs += 1
        params = SpeechParams(text=WARMUP_TEXT, priority=Priority.INTERACTIVE, request_id=f"vr_warmup_{self.runs}",
                              labels={"format": "pcm"})
        try:
            stream = await self.service.open(params)
            async with contextlib.aclosing(aiter(stream)) as audio:
                async for _ in audio:
                    pass
        except SpeechError as e:
            self.status, self.last_error, self.last_exception = "failed", e.message, e
        except Exception as e:  # noqa: BLE001 - reported in /v1/health, the server keeps serving
            log.exception("voicereader warmup failed")
            self.status, self.last_error, self.last_exception = "failed", f"internal error: {e!r}", None
        else:
            self.status, self.last_error, self.last_exception = "ready", None, None
        finally:
            self.last_duration_ms = round((time.monotonic() - started) * 1000, 1)


class JobHub:
    """The jobs of one app (FIFO, one at a time), the events sockets, and the buffer for no listener."""

    def __init__(self, service: SpeechService, max_queued: int):
        self.service = service
        self.max_queued = max_queued
        self.listeners: list[WsChannel] = []
        self.current: Job | None = None
        self.warmup = Warmup(service)
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._backlog: deque[tuple[float, Any, float]] = deque()  # (added at, event, audio seconds)
        self._backlog_seconds = 0.0
        self._lock = asyncio.Lock()  # one order of events for every socket, backlog included
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None

    # -- jobs ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._pending)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def buffered(self) -> int:
        return len(self._backlog)

    def new_job(self, voice: Voice, voice_id: str, language: str, text: str, max_chars: int,
                rate: float, volume: float) -> Job:
        return Job(id=f"job_{uuid.uuid4().hex[:16]}", voice=voice, voice_id=voice_id, language=language,
                   chunks=text_chunks(text, max_chars), rate=rate, volume=volume)

    async def submit(self, job: Job) -> int:
        """Queue `job`; its position (0: it starts now, and this waits until its first chunk is admitted,
        raising that chunk's refusal). Overloaded when the queue is full."""
        position = len(self._pending) + (self.current is not None)
        if len(self._pending) >= self.max_queued and self.current is not None:
            raise Overloaded(f"{len(self._pending)} speak jobs are queued already (the limit); wait for one to "
                             "finish or cancel", retry_after=5)
        if position == 0:
            job.admitted = asyncio.get_running_loop().create_future()
        self._remember(job)
        self._pending.append(job)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        if job.admitted is not None:
            try:
                await asyncio.shield(job.admitted)
            except SpeechError:
                self._jobs.pop(job.id, None)  # refused before any event: the HTTP answer says it all
                raise
        return position

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def cancel(self, job_id: str | None) -> list[str]:
        """Cancel one job (queued or running), or with None the current one and every queued one.
        Returns when they are over: their JOB_CANCELED is out and their slots are free."""
        if job_id is None:
            targets = [*([self.current] if self.current is not None else []), *self._pending]
        else:
            job = self._jobs.get(job_id)
            targets = [job] if job is not None and not job.finished and not job.canceled else []
        running: list[asyncio.Task] = []
        for job in targets:
            job.canceled = True
            if job in self._pending:
                self._pending.remove(job)
                job.state = "canceled"
                await self.emit(JobCanceled(job_id=job.id, audio_chunks=0, reason="canceled while queued"))
            elif job.task is not None and not job.task.done():
                job.task.cancel()  # the task sends JOB_CANCELED itself, after its last AUDIO_CHUNK
                running.append(job.task)
        if running:
            await asyncio.wait(running)
        return [job.id for job in targets]

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP_FINISHED_JOBS + self.max_queued + 1:
            oldest = next(iter(self._jobs.values()))
            if not oldest.finished:
                break
            self._jobs.popitem(last=False)

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            job = self._pending.popleft()
            self.current = job
            job.task = asyncio.create_task(self._run(job))
            try:
                await asyncio.wait({job.task})
            finally:
                self.current = None

    async def _run(self, job: Job) -> None:
        GatewayMetrics.label_route(ROUTE, job.id)  # this task's context: what it opens counts as "voicereader"
        job.state = "running"
        framer: PcmFramer | None = None
        try:
            for index, text in enumerate(job.chunks):
                params = SpeechParams(text=text, voice=job.voice.id, language=job.language,
                                      priority=Priority.INTERACTIVE, request_id=f"{job.id}-{index}",
                                      labels={"format": "pcm"})
                stream = await self.service.open(params)
                try:
                    if index == 0:
                        if job.admitted is not None:
                            job.admitted.set_result(None)
                        await self.emit(JobStarted(job_id=job.id, voice_id=job.voice_id, chunks=len(job.chunks)))
                    async with contextlib.aclosing(aiter(stream)) as audio:
                        async for chunk in audio:
                            if framer is None:
                                framer = PcmFramer(chunk.sample_rate, "pcm16", job.rate, source_rate=chunk.sample_rate)
                            samples = chunk.samples if job.volume == 1.0 else np.asarray(chunk.samples) * job.volume
                            for frame in framer.push(samples):
                                await self._audio(job, index, frame, framer.sample_rate)
                finally:
                    await stream.aclose()  # the slot is free before the next chunk asks for one
            if framer is not None:
                for frame in framer.flush():
                    await self._audio(job, len(job.chunks) - 1, frame, framer.sample_rate)
            job.state = "done"
            await self.emit(JobDone(job_id=job.id, audio_chunks=job.audio_chunks,
                                    audio_ms=round(job.audio_seconds * 1000, 1)))
        except asyncio.CancelledError:
            if not job.canceled:
                raise  # the server stops
            job.state = "canceled"
            self._settle(job)
            await self.emit(JobCanceled(job_id=job.id, audio_chunks=job.audio_chunks, reason="canceled"))
        except NoListener:
            job.state = "failed"
            await self.emit(JobError(job_id=job.id, audio_chunks=job.audio_chunks, error=VoiceReaderError(
                code=NO_LISTENER, message=f"no events socket connected and {BACKLOG_AUDIO_SECONDS:g} s of audio "
                "buffered: the job was stopped; connect to the events socket before or right after /v1/speak")))
        except SpeechError as e:
            job.state = "failed"
            if job.admitted is not None and not job.admitted.done():
                job.admitted.set_exception(e)  # /v1/speak answers with it; no event was sent
                return
            if e.status >= 500:
                log.warning("voicereader job %s failed: %s", job.id, e.message)
            await self.emit(JobError(job_id=job.id, audio_chunks=job.audio_chunks,
                                     error=VoiceReaderError(code=error_code(e), message=e.message, retry_after=e.retry_after)))
        except Exception:  # noqa: BLE001 - the client hears about it, the server keeps serving
            log.exception("voicereader job %s failed", job.id)
            job.state = "failed"
            self._settle(job)
            await self.emit(JobError(job_id=job.id, audio_chunks=job.audio_chunks, error=VoiceReaderError(
                code="SYNTHESIS_ERROR", message="internal error during synthesis")))
        finally:
            if framer is not None:
                framer.close()
            self._settle(job)

    @staticmethod
    def _settle(job: Job) -> None:
        """A /v1/speak still waiting for this job's first admission gets its answer (the job id)."""
        if job.admitted is not None and not job.admitted.done():
            job.admitted.set_result(None)

    async def _audio(self, job: Job, index: int, frame: bytes, rate: int) -> None:
        seconds = len(frame) / 2 / rate
        event = AudioChunk(job_id=job.id, seq=job.audio_chunks, chunk_index=index, audio=AudioPayload(
            format="pcm_s16le", sample_rate=rate, channels=1, data_base64=base64.b64encode(frame).decode(),
            duration_ms=round(seconds * 1000, 3)))
        await self.emit(event, seconds)
        job.audio_chunks += 1
        job.audio_seconds += seconds

    # -- events ----------------------------------------------------------------------------------
    async def emit(self, event: Any, audio_seconds: float = 0.0) -> None:
        """Send `event` to every events socket, or buffer it while none is connected (NoListener when
        buffering audio would pass the bound)."""
        async with self._lock:
            delivered = False
            for channel in list(self.listeners):
                if await channel.send(event):
                    delivered = True
                else:
                    self.listeners.remove(channel)
            if not delivered:
                self._buffer(event, audio_seconds)

    def _buffer(self, event: Any, audio_seconds: float) -> None:
        self._prune()
        if audio_seconds and self._backlog_seconds + audio_seconds > BACKLOG_AUDIO_SECONDS:
            raise NoListener
        self._backlog.append((time.monotonic(), event, audio_seconds))
        self._backlog_seconds += audio_seconds

    def _prune(self) -> None:
        limit = time.monotonic() - BACKLOG_TTL_SECONDS
        while self._backlog and self._backlog[0][0] < limit:
            self._backlog_seconds -= self._backlog.popleft()[2]

    async def attach(self, channel: WsChannel, hello: Any) -> bool:
        """Add an events socket: `hello` (built from the replay count), the buffered events, then live ones."""
        async with self._lock:
            self._prune()
            backlog = [event for _, event, _ in self._backlog]
            self._backlog.clear()
            self._backlog_seconds = 0.0
            if not await channel.send(hello(len(backlog))):
                self._restore(backlog)
                return False
            for sent, event in enumerate(backlog):
                if not await channel.send(event):
                    self._restore(backlog[sent:])
                    return False
            self.listeners.append(channel)
            return True

    def _restore(self, events: list[Any]) -> None:
        now = time.monotonic()
        for event in events:
            seconds = event.audio.duration_ms / 1000 if isinstance(event, AudioChunk) else 0.0
            self._backlog.append((now, event, seconds))
            self._backlog_seconds += seconds

    def detach(self, channel: WsChannel) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.remove(channel)

