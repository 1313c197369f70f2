"""The events hub in process, on the embedded engine: each event is encoded once, whatever the number of
sockets, and every socket gets the same text."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from app.sockets.session import WsChannel
from app.voicereader.jobs import JobHub
from app.voicereader.protocol import AudioChunk, Connected
from engine.embedded import EmbeddedEngine
from engine.errors import Overloaded
from engine.service import SpeechService


class RecordingSocket:
    """What a WsChannel needs of a litestar WebSocket: the text frames it was given, kept as given."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.done = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.frames.append(text)
        if json.loads(text)["type"] in ("JOB_DONE", "JOB_ERROR", "JOB_CANCELED"):
            self.done.set()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


@pytest.fixture
async def service():
    service = SpeechService([EmbeddedEngine()])
    await service.start()
    yield service
    await service.close()


async def test_each_event_is_encoded_once_for_every_socket(service, monkeypatch):
    encoded: list[type] = []
    encode = msgspec.json.encode

    def counting(obj, *args, **kwargs):
        encoded.append(type(obj))
        return encode(obj, *args, **kwargs)

    monkeypatch.setattr(msgspec.json, "encode", counting)
    hub = JobHub(service, max_queued=8)
    sockets = [RecordingSocket() for _ in range(20)]
    for socket in sockets:
        channel = WsChannel(socket, idle_timeout=60, max_message_bytes=65536)  # type: ignore[arg-type]
        hub.attach(channel, None, lambda replayed: Connected(current_job=None, queued=0, replayed=replayed))
    voice = service.registry.resolve(None)
    job = hub.new_job(voice, "0", "auto", "One sentence to speak. And a second one.", 300, rate=1.0, volume=1.0)
    await hub.submit(job)
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in sockets)), 60)
    chunks = encoded.count(AudioChunk)
    assert chunks == job.audio_chunks > 3, (chunks, job.audio_chunks)
    first = sockets[0].frames
    assert [json.loads(f)["type"] for f in first][-1] == "JOB_DONE"
    for socket in sockets[1:]:
        # Not equal copies: the very same str object, encoded once and shared by every outbox.
        assert len(socket.frames) == len(first) and all(a is b for a, b in zip(socket.frames[1:], first[1:], strict=True))
    for listener in list(hub.listeners):
        hub.detach(listener)


async def test_a_burst_of_submits_reserves_exactly_the_limit(service):
    """All 30 submits run before the worker task takes the first job: the count must include the job
    handed over but not yet started (it used to pass as "nothing running", and all 30 were queued)."""
    hub = JobHub(service, max_queued=8)
    voice = service.registry.resolve(None)
    jobs = [hub.new_job(voice, "0", "auto", "A sentence that is spoken. " * 20, 300, rate=1.0, volume=1.0)
            for _ in range(30)]
    results = await asyncio.gather(*(hub.submit(job) for job in jobs), return_exceptions=True)
    positions = sorted(r for r in results if isinstance(r, int))
    assert positions == list(range(9))
    assert sum(isinstance(r, Overloaded) for r in results) == 21
    accepted = [job.id for job, r in zip(jobs, results, strict=True) if isinstance(r, int)]
    assert sorted(await hub.cancel(None, None)) == sorted(accepted)


async def test_a_job_canceled_before_its_task_first_runs_is_canceled_and_answered(service):
    """A cancel that lands after the worker made the job's task but before that task ran a step: the task
    never enters `_run`, so nothing there said JOB_CANCELED or answered the /v1/speak waiting on it
    (it waited forever)."""
    hub = JobHub(service, max_queued=8)
    socket = RecordingSocket()
    channel = WsChannel(socket, idle_timeout=60, max_message_bytes=65536)  # type: ignore[arg-type]
    listener = hub.attach(channel, None, lambda replayed: Connected(current_job=None, queued=0, replayed=replayed))
    job = hub.new_job(service.registry.resolve(None), "0", "auto", "A sentence.", 300, rate=1.0, volume=1.0)
    speak = asyncio.create_task(hub.submit(job))
    while job.task is None:
        await asyncio.sleep(0)
    assert job.state == "queued"  # made, not yet run
    # Awaited directly: wait_for would run it as a task of its own, after the job's task had started.
    assert await hub.cancel(None, None) == [job.id]
    assert await asyncio.wait_for(speak, 5) == 0
    await asyncio.wait_for(socket.done.wait(), 5)
    assert job.state == "canceled"
    assert json.loads(socket.frames[-1])["type"] == "JOB_CANCELED"
    hub.detach(listener)
