"""Speak jobs, the events they send to the events sockets, and the warmup, for one app.

VoiceReader's tts-engine is a single-user sidecar: one job speaks at a time and its events go to
every connected events socket. Decisions:

- A speak while a job runs is queued (FIFO, at most `--ws-max-queued-utterances` waiting; beyond,
  429 RATE_LIMITED). The check and the reservation are one synchronous step, so a burst of
  concurrent speaks admits exactly one running and that many waiting. `POST /v1/cancel` without a
  job id stops the current job and drops the queue.
- A job's text is cut into chunks of whole sentences (`chunk_max_chars`, default
  `--max-segment-chars`); each chunk is one `SpeechService.open` (its own admission slot, interactive
  priority, route label "voicereader"), so a job holds a slot only while a chunk is synthesized and
  never after it ends or is cancelled. The first chunk of a job that starts at once is opened
  before `/v1/speak` answers, so a busy server, an unknown voice or a loading engine is an HTTP error.
- Every event of a job is emitted by the job's own task, the terminal one last: after JOB_CANCELED
  no AUDIO_CHUNK of that job follows.
- Emitting never waits for a socket: an event is JSON-encoded once and the same text is put in the
  outbox of each socket, whose own sender task writes it. A socket whose outbox fills (a reader that
  stopped) is closed and dropped; one whose write makes no progress for `--send-timeout` is aborted
  by the connection guard. Nobody else waits for it: not the job, not the other sockets, not a cancel.
- With API keys, a job belongs to the key that made it: its events go only to sockets opened with
  that key, its replay buffer is that key's, and only that key can cancel it (another key's job id
  is "not found"). Without keys there is one owner, as in VoiceReader.
- No events socket of the job's owner connected: events are buffered (VoiceReader connects right
  after `/v1/speak` answers) and replayed to the next such socket. The buffer holds at most
  BACKLOG_AUDIO_SECONDS of audio; a job that would exceed it stops (slot freed) with JOB_ERROR
  NO_LISTENER. Buffered events older than BACKLOG_TTL_SECONDS are dropped.
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

import msgspec
import numpy as np

from app.ops.metrics import GatewayMetrics
from app.sockets.audio import PcmFramer
from app.sockets.session import POLICY_VIOLATION, WsChannel
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
from engine import limits
from engine.base import Priority, Voice
from engine.errors import Overloaded, SpeechError
from engine.service import SpeechParams, SpeechService
from engine.text import split_sentences

log = logging.getLogger("app.voicereader")

ROUTE = "voicereader"  # the metrics route label of every synthesis a job or the warmup opens
BACKLOG_AUDIO_SECONDS = 120.0
BACKLOG_TTL_SECONDS = 60.0
KEEP_FINISHED_JOBS = 32  # finished jobs remembered for `cancel` (answered "not running", not 404)
# How far one events socket may fall behind before it is dropped: room for a whole replay (at most
# BACKLOG_AUDIO_SECONDS) and as much again live. A socket that reads keeps up with any engine; the
# events are shared between outboxes, so a full one holds references, not copies.
OUTBOX_AUDIO_SECONDS = 2 * BACKLOG_AUDIO_SECONDS
OUTBOX_EVENTS = 4096
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
    owner: str | None = None  # the API key that made it (a digest); None without keys
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


def encode(event: Any) -> str:
    """An event as the JSON text of one frame; done once per event, whatever the number of sockets."""
    return msgspec.json.encode(event).decode()


class Listener:
    """One events socket: its own bounded outbox and sender task, so a slow socket delays only itself."""

    def __init__(self, channel: WsChannel, owner: str | None):
        self.channel = channel
        self.owner = owner
        self.dropped = False
        self._outbox: deque[tuple[str, float]] = deque()  # (encoded event, its audio seconds)
        self._audio_seconds = 0.0
        self._ready = asyncio.Event()
        self._closing: asyncio.Task | None = None
        self._sender = asyncio.create_task(self._send_all())

    def offer(self, text: str, audio_seconds: float = 0.0) -> bool:
        """Queue an encoded event; False when the socket is gone or too far behind (then it is dropped)."""
        if self.dropped:
            return False
        if len(self._outbox) >= OUTBOX_EVENTS or self._audio_seconds + audio_seconds > OUTBOX_AUDIO_SECONDS:
            limits.hit("slow_listener")
            log.warning("voicereader events socket dropped: %d events (%.0f s of audio) unread", len(self._outbox),
                        self._audio_seconds)
            self.drop(POLICY_VIOLATION, "too far behind: the events socket is not being read")
            return False
        self._outbox.append((text, audio_seconds))
        self._audio_seconds += audio_seconds
        self._ready.set()
        return True

    def drop(self, code: int = 1000, reason: str = "") -> None:
        """Stop sending, forget what is queued, and close the socket (in the background: a socket that
        does not read may take up to the send timeout to close)."""
        if self.dropped:
            return
        self.dropped = True
        self._outbox.clear()
        self._audio_seconds = 0.0
        self._sender.cancel()
        if code != 1000 and not self.channel.closed:
            self._closing = asyncio.create_task(self.channel.close(code, reason))

    async def _send_all(self) -> None:
        while True:
            if not self._outbox:
                self._ready.clear()
                await self._ready.wait()
                continue
            text, seconds = self._outbox[0]
            if not await self.channel.send_text(text):  # gone, or aborted by the send timeout
                self.dropped = True
                self._outbox.clear()
                return
            self._outbox.popleft()
            self._audio_seconds -= seconds


class _Backlog:
    """One owner's events while none of its sockets is connected (bounded in audio and in age)."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, str, float]] = deque()  # (added at, encoded event, audio seconds)
        self.seconds = 0.0

    def add(self, text: str, audio_seconds: float) -> None:
        self.prune()
        if audio_seconds and self.seconds + audio_seconds > BACKLOG_AUDIO_SECONDS:
            raise NoListener
        self.events.append((time.monotonic(), text, audio_seconds))
        self.seconds += audio_seconds

    def prune(self) -> None:
        limit = time.monotonic() - BACKLOG_TTL_SECONDS
        while self.events and self.events[0][0] < limit:
            self.seconds -= self.events.popleft()[2]


class JobHub:
    """The jobs of one app (FIFO, one at a time), the events sockets, and the buffers for no listener."""

    def __init__(self, service: SpeechService, max_queued: int):
        self.service = service
        self.max_queued = max_queued
        self.listeners: list[Listener] = []
        self.current: Job | None = None
        self.warmup = Warmup(service)
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._backlogs: dict[str | None, _Backlog] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None

    # -- jobs ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._pending)

    def current_of(self, owner: str | None) -> Job | None:
        return self.current if self.current is not None and self.current.owner == owner else None

    def queued(self, owner: str | None) -> int:
        return sum(job.owner == owner for job in self._pending)

    def buffered(self, owner: str | None) -> int:
        backlog = self._backlogs.get(owner)
        if backlog is None:
            return 0
        backlog.prune()
        return len(backlog.events)

    def listening(self, owner: str | None) -> int:
        return sum(listener.owner == owner for listener in self.listeners)

    def new_job(self, voice: Voice, voice_id: str, language: str, text: str, max_chars: int,
                rate: float, volume: float, owner: str | None = None) -> Job:
        return Job(id=f"job_{uuid.uuid4().hex[:16]}", voice=voice, voice_id=voice_id, language=language,
                   chunks=text_chunks(text, max_chars), rate=rate, volume=volume, owner=owner)

    async def submit(self, job: Job) -> int:
        """Queue `job`; its position (0: it starts now, and this waits until its first chunk is admitted,
        raising that chunk's refusal). Overloaded when the queue is full.

        Counted and reserved with no await in between: a job handed to the worker but not yet started
        counts like the running one, so concurrent speaks cannot all see room for themselves."""
        position = len(self._pending) + (self.current is not None)
        if position > self.max_queued:
            raise Overloaded(f"{position - 1} speak jobs are queued already (the limit); wait for one to "
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

    def job(self, job_id: str, owner: str | None) -> Job | None:
        """The job `job_id` if `owner` made it (another key's job is not found)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    async def cancel(self, job_id: str | None, owner: str | None) -> list[str]:
        """Cancel one job of `owner` (queued or running), or with None its current one and every queued one.
        Returns when they are over: their JOB_CANCELED is queued for every socket and their slots are free.
        Never waits for a socket."""
        if job_id is None:
            targets = [job for job in (self.current, *self._pending) if job is not None and job.owner == owner]
        else:
            job = self.job(job_id, owner)
            targets = [job] if job is not None and not job.finished and not job.canceled else []
        running: list[asyncio.Task] = []
        for job in targets:
            job.canceled = True
            if job in self._pending:
                self._pending.remove(job)
                job.state = "canceled"
                self.emit(job, JobCanceled(job_id=job.id, audio_chunks=0, reason="canceled while queued"))
            elif job.task is not None and not job.task.done():
                job.task.cancel()  # the task emits JOB_CANCELED itself, after its last AUDIO_CHUNK
                running.append(job.task)
        if running:
            await asyncio.wait(running)
        for job in targets:
            if not job.finished:  # its task was canceled before its first step: `_run` never ran to say so
                job.state = "canceled"
                self._settle(job)
                self.emit(job, JobCanceled(job_id=job.id, audio_chunks=0, reason="canceled"))
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
                        self.emit(job, JobStarted(job_id=job.id, voice_id=job.voice_id, chunks=len(job.chunks)))
                    async with contextlib.aclosing(aiter(stream)) as audio:
                        async for chunk in audio:
                            if framer is None:
                                framer = PcmFramer(chunk.sample_rate, "pcm16", job.rate, source_rate=chunk.sample_rate)
                            samples = chunk.samples if job.volume == 1.0 else np.asarray(chunk.samples) * job.volume
                            for frame in framer.push(samples):
                                self._audio(job, index, frame, framer.sample_rate)
                finally:
                    await stream.aclose()  # the slot is free before the next chunk asks for one
            if framer is not None:
                for frame in framer.flush():
                    self._audio(job, len(job.chunks) - 1, frame, framer.sample_rate)
            job.state = "done"
            self.emit(job, JobDone(job_id=job.id, audio_chunks=job.audio_chunks,
                                   audio_ms=round(job.audio_seconds * 1000, 1)))
        except asyncio.CancelledError:
            if not job.canceled:
                raise  # the server stops
            job.state = "canceled"
            self._settle(job)
            self.emit(job, JobCanceled(job_id=job.id, audio_chunks=job.audio_chunks, reason="canceled"))
        except NoListener:
            job.state = "failed"
            self.emit(job, JobError(job_id=job.id, audio_chunks=job.audio_chunks, error=VoiceReaderError(
                code=NO_LISTENER, message=f"no events socket connected and {BACKLOG_AUDIO_SECONDS:g} s of audio "
                "buffered: the job was stopped; connect to the events socket before or right after /v1/speak")))
        except SpeechError as e:
            job.state = "failed"
            if job.admitted is not None and not job.admitted.done():
                job.admitted.set_exception(e)  # /v1/speak answers with it; no event was sent
                return
            if e.status >= 500:
                log.warning("voicereader job %s failed: %s", job.id, e.message)
            self.emit(job, JobError(job_id=job.id, audio_chunks=job.audio_chunks,
                                    error=VoiceReaderError(code=error_code(e), message=e.message, retry_after=e.retry_after)))
        except Exception:  # noqa: BLE001 - the client hears about it, the server keeps serving
            log.exception("voicereader job %s failed", job.id)
            job.state = "failed"
            self._settle(job)
            self.emit(job, JobError(job_id=job.id, audio_chunks=job.audio_chunks, error=VoiceReaderError(
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

    def _audio(self, job: Job, index: int, frame: bytes, rate: int) -> None:
        seconds = len(frame) / 2 / rate
        event = AudioChunk(job_id=job.id, seq=job.audio_chunks, chunk_index=index, audio=AudioPayload(
            format="pcm_s16le", sample_rate=rate, channels=1, data_base64=base64.b64encode(frame).decode(),
            duration_ms=round(seconds * 1000, 3)))
        self.emit(job, event, seconds)
        job.audio_chunks += 1
        job.audio_seconds += seconds

    # -- events ----------------------------------------------------------------------------------
    def emit(self, job: Job, event: Any, audio_seconds: float = 0.0) -> None:
        """Queue `event` for every socket of the job's owner, or buffer it while none is connected
        (NoListener when buffering audio would pass the bound). Encoded once; never waits."""
        text = encode(event)
        delivered = False
        for listener in list(self.listeners):
            if listener.owner != job.owner:
                continue
            if listener.offer(text, audio_seconds):
                delivered = True
            else:
                self.listeners.remove(listener)
        if not delivered:
            self._backlogs.setdefault(job.owner, _Backlog()).add(text, audio_seconds)

    def attach(self, channel: WsChannel, owner: str | None, hello: Any) -> Listener:
        """Add an events socket: `hello` (built from the replay count), its owner's buffered events, then
        live ones, all through its outbox (nothing here waits for the socket)."""
        backlog = self._backlogs.pop(owner, None)
        replay: list[tuple[float, str, float]] = []
        if backlog is not None:
            backlog.prune()
            replay = list(backlog.events)
        listener = Listener(channel, owner)
        listener.offer(encode(hello(len(replay))))
        for _, text, seconds in replay:
            listener.offer(text, seconds)
        self.listeners.append(listener)
        return listener

    def detach(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self.listeners.remove(listener)
        listener.drop()
