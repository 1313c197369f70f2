"""The Wyoming server (Home Assistant TTS) against a live gateway on the embedded engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from tests.ops import test_metrics as metrics
from tests.server import Server, free_port, start_server

TIMEOUT = 60


@pytest.fixture(scope="module")
def wyoming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("wyoming"), "--wyoming-port", str(port))
    server.wyoming_port = port  # type: ignore[attr-defined]
    yield server
    server.stop()


def client(server: Server) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", server.wyoming_port, read_timeout=TIMEOUT)  # type: ignore[attr-defined]


async def read(c: AsyncTcpClient) -> Event:
    event = await asyncio.wait_for(c.read_event(), TIMEOUT)
    assert event is not None, "server closed the connection"
    return event


async def read_utterance(c: AsyncTcpClient) -> np.ndarray:
    """audio-start, audio-chunks, audio-stop → int16 samples."""
    start = await read(c)
    assert AudioStart.is_type(start.type), start
    fmt = AudioStart.from_event(start)
    assert (fmt.rate, fmt.width, fmt.channels) == (24000, 2, 1)
    pieces = []
    while True:
        event = await read(c)
        if AudioStop.is_type(event.type):
            break
        assert AudioChunk.is_type(event.type), event
        chunk = AudioChunk.from_event(event)
        assert (chunk.rate, chunk.width, chunk.channels) == (24000, 2, 1)
        pieces.append(np.frombuffer(chunk.audio, "<i2"))
    assert pieces, "no audio-chunk between audio-start and audio-stop"
    return np.concatenate(pieces)


def scrape(server: Server, name: str, **labels: str) -> float:
    return metrics.value(metrics.scrape(server), name, **labels)


async def test_describe_lists_the_voices_with_streaming(wyoming_server: Server) -> None:
    voices = httpx.get(wyoming_server.v1 + "/audio/voices", timeout=10).json()
    async with client(wyoming_server) as c:
        await c.write_event(Describe().event())
        event = await read(c)
    assert Info.is_type(event.type)
    info = Info.from_event(event)
    [program] = info.tts
    assert program.name == "qwen-speech-gateway" and program.installed and program.version
    assert program.attribution.name
    assert program.supports_synthesize_streaming is True
    names = {v.name for v in program.voices}
    listed = voices["data"]
    assert {v["id"] for v in listed} <= names
    assert all(len(v.languages) == 1 for v in program.voices)  # one each: Home Assistant derives its default from them


async def test_synthesize_streams_pcm16(wyoming_server: Server) -> None:
    text = "Hello from the speech gateway. This is a Wyoming test."
    async with client(wyoming_server) as c:
        await c.write_event(Synthesize(text=text).event())
        audio = await read_utterance(c)
    seconds = len(audio) / 24000
    assert 1.0 < seconds < 20.0, seconds
    assert np.abs(audio).max() > 1000  # not silence


async def test_streaming_synthesis_speaks_each_sentence(wyoming_server: Server) -> None:
    text = "The kitchen lights are on. The front door is locked. It is twenty degrees outside."
    pieces = ["The kitch", "en lights are o", "n. The front do", "or is locked. It is twen", "ty degrees outside."]
    async with client(wyoming_server) as c:
        await c.write_event(Synthesize(text=text).event())
        whole = await read_utterance(c)

        await c.write_event(SynthesizeStart().event())
        for piece in pieces:
            await c.write_event(SynthesizeChunk(text=piece).event())
        # Home Assistant sends the whole text as a plain synthesize too (compatibility): ignored.
        await c.write_event(Synthesize(text=text).event())
        await c.write_event(SynthesizeStop().event())
        sentences = []
        while True:
            event = await read(c)
            if SynthesizeStopped.is_type(event.type):
                break
            c_start = event
            assert AudioStart.is_type(c_start.type), c_start
            samples = []
            while not AudioStop.is_type((event := await read(c)).type):
                samples.append(np.frombuffer(AudioChunk.from_event(event).audio, "<i2"))
            sentences.append(np.concatenate(samples))
        assert len(sentences) == 3
        # Nothing more follows (the compatibility synthesize was not spoken): a describe answers next.
        await c.write_event(Describe().event())
        assert Info.is_type((await read(c)).type)
    total = sum(len(s) for s in sentences)
    assert abs(total - len(whole)) / len(whole) < 0.25, (total, len(whole))


async def refused_then_closed(c: AsyncTcpClient, code: str) -> Error:
    """An `error`, then the end of the connection: Home Assistant's client reads until audio-stop or the
    end, so a refused plain synthesize must not leave it waiting."""
    event = await read(c)
    assert Error.is_type(event.type), event
    error = Error.from_event(event)
    assert error.code == code, error
    assert await asyncio.wait_for(c.read_event(), 10) is None, "the connection stayed open after the error"
    return error


@pytest.mark.parametrize("synthesize,code,says", [
    (Synthesize(text="Hello there.", voice=SynthesizeVoice(name="no-such-voice")), "VoiceNotFoundError",
     "no-such-voice"),
    (Synthesize(text="x" * 4097), "InvalidRequestError", "4096"),
    (Synthesize(text="\U0001F642 \U0001F642"), "InvalidRequestError", "nothing"),
    (Synthesize(text="Hello.", voice=SynthesizeVoice(language="tlh")), "InvalidRequestError", "unsupported language"),
])
async def test_a_refused_synthesize_is_an_error_then_the_end(wyoming_server: Server, synthesize: Synthesize,
                                                             code: str, says: str) -> None:
    async with client(wyoming_server) as c:
        await c.write_event(synthesize.event())
        error = await refused_then_closed(c, code)
        assert says in error.text
    async with client(wyoming_server) as c:  # the next connection is served
        await c.write_event(Synthesize(text="Hello there.").event())
        assert len(await read_utterance(c)) > 0


async def test_client_leaving_mid_stream_frees_the_slot(wyoming_server: Server) -> None:
    text = " ".join(f"This is sentence number {i} of a long announcement that nobody will hear." for i in range(30))
    async with client(wyoming_server) as c:
        await c.write_event(Synthesize(text=text).event())
        assert AudioStart.is_type((await read(c)).type)
        assert AudioChunk.is_type((await read(c)).type)
        assert scrape(wyoming_server, "speech_gateway_active_slots") >= 1
    deadline = time.monotonic() + 15
    while scrape(wyoming_server, "speech_gateway_active_slots") != 0:
        assert time.monotonic() < deadline, "the admission slot was not freed after the client left"
        await asyncio.sleep(0.1)
    assert scrape(wyoming_server, "speech_gateway_speech_outcomes_total", route="wyoming", outcome="cancelled") >= 1


async def test_two_clients_at_once(wyoming_server: Server) -> None:
    async def one(text: str) -> int:
        async with client(wyoming_server) as c:
            await c.write_event(Synthesize(text=text).event())
            return len(await read_utterance(c))

    a, b = await asyncio.gather(one("The first client speaks now."), one("And a second one talks at the same time."))
    assert a > 0 and b > 0


def test_off_unless_a_port_is_given(tmp_path: Path) -> None:
    from app.settings import load_settings
    assert load_settings(environ={}).wyoming_port is None
    assert load_settings(environ={"SPEECH_GATEWAY_WYOMING_PORT": "10200"}).wyoming_port == 10200


async def test_streaming_with_an_unknown_voice_is_an_error_then_stopped(wyoming_server: Server) -> None:
    async with client(wyoming_server) as c:
        await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
        await c.write_event(SynthesizeChunk(text="Not spoken. ").event())
        await c.write_event(SynthesizeStop().event())
        event = await read(c)
        assert Error.is_type(event.type) and Error.from_event(event).code == "VoiceNotFoundError"
        assert SynthesizeStopped.is_type((await read(c)).type)
        await c.write_event(Synthesize(text="Still here.").event())
        assert len(await read_utterance(c)) > 0


async def test_a_busy_server_says_so_and_closes(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, "--wyoming-port", str(port), "--max-concurrent", "1", "--max-queue", "0")
    server.wyoming_port = port  # type: ignore[attr-defined]
    long_text = " ".join(f"Sentence {i} keeps the only slot busy for a while." for i in range(40))
    try:
        async with client(server) as holder, client(server) as other:
            await holder.write_event(Synthesize(text=long_text).event())
            assert AudioStart.is_type((await read(holder)).type)
            await other.write_event(Synthesize(text="Let me in.").event())
            assert (await refused_then_closed(other, "ServerBusyError")).text
        deadline = time.monotonic() + 15  # the holder left: its slot comes back, and a new client is served
        while scrape(server, "speech_gateway_active_slots") != 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        async with client(server) as again:
            await again.write_event(Synthesize(text="Now there is room.").event())
            assert len(await read_utterance(again)) > 0
    finally:
        server.stop()


async def test_a_silent_client_is_closed_when_idle(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path, "--wyoming-port", str(port), "--ws-idle-timeout", "1")
    server.wyoming_port = port  # type: ignore[attr-defined]
    try:
        async with client(server) as c:
            # A request served, then silence: the server closes after the idle timeout.
            text = " ".join(f"Sentence {i} of a text that takes longer than a second to hear." for i in range(6))
            await c.write_event(Synthesize(text=text).event())
            assert len(await read_utterance(c)) > 24000
            assert await asyncio.wait_for(c.read_event(), 10) is None
        assert scrape(server, "speech_gateway_limit_hits_total", limit="wyoming_idle") == 1
    finally:
        server.stop()
