"""Soprano-RS's `/v1/stream` against a live gateway (embedded engine): its own Python client, the
binary framing byte by byte, chunking (min/max chars, max delay), stop, bad input, auth, a busy server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.server import Server

SEED_CLIENT = Path(__file__).with_name("seed_client.py")
Message = bytes | dict[str, Any]


async def connect(server: Server, query: str = "", **kwargs: Any) -> ClientConnection:
    return await websockets.connect(server.ws_url + "/v1/stream" + query, **kwargs)


async def receive(ws: ClientConnection, timeout: float = 20) -> Message:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return raw if isinstance(raw, bytes) else json.loads(raw)


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


async def ready(ws: ClientConnection) -> str:
    message = await receive(ws)
    assert isinstance(message, dict) and message["type"] == "ready" and set(message) == {"type", "session_id"}
    return str(uuid.UUID(message["session_id"]))


async def until_done(ws: ClientConnection, timeout: float = 30) -> list[Message]:
    out: list[Message] = []
    while not out or out[-1] != {"type": "done"}:
        out.append(await receive(ws, timeout))
    return out


def parse_frame(data: bytes) -> tuple[dict, bytes]:
    """The seed's framing, checked exactly: u32 big-endian header length, JSON header, PCM s16le."""
    assert len(data) >= 4
    header_len = int.from_bytes(data[:4], "big")
    assert 0 < header_len <= len(data) - 4
    header = json.loads(data[4 : 4 + header_len].decode("utf-8"))
    pcm = data[4 + header_len :]
    assert set(header) - {"text"} == {"chunk_id", "sample_rate", "channels", "format"}, header
    assert (header["sample_rate"], header["channels"], header["format"]) == (24000, 1, "pcm_s16le")
    assert pcm and len(pcm) % 2 == 0
    return header, pcm


def frames(messages: list[Message]) -> list[tuple[dict, bytes]]:
    return [parse_frame(m) for m in messages if isinstance(m, bytes)]


def segments(messages: list[Message]) -> list[str]:
    """With include_text: each segment's text, as its first frame carries it."""
    return [h["text"] for h, _ in frames(messages) if "text" in h]


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


async def speaks(ws: ClientConnection, text: str = "Still speaking.") -> list[tuple[dict, bytes]]:
    await send(ws, "text", text=text)
    await send(ws, "flush")
    got = frames(await until_done(ws))
    audio = samples(b"".join(pcm for _, pcm in got))
    assert audio.size > 24000 * 0.3 and np.sqrt(np.mean(audio**2)) > 0.01
    return got


# -- the seed's own client ---------------------------------------------------------------------
def test_the_seed_python_client_gets_speech(embedded_server: Server, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(SEED_CLIENT), embedded_server.ws_url + "/v1/stream"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    raw = (tmp_path / "output.raw").read_bytes()
    assert len(raw) % 2 == 0
    audio = samples(raw)
    seconds = audio.size / 24000  # 24 kHz: the header says so, and the seed's client saves what it gets
    assert 1.0 < seconds < 12.0, seconds  # "Hello, this is a test of the Soprano TTS system!"
    assert np.sqrt(np.mean(audio**2)) > 0.02 and np.abs(audio).max() > 0.1
    printed = [tuple(map(int, m)) for m in re.findall(r"^Chunk (\d+): (\d+) bytes$", run.stdout, re.M)]
    assert printed and [c for c, _ in printed] == list(range(1, len(printed) + 1))
    assert sum(n for _, n in printed) == len(raw)


# -- framing and chunking ----------------------------------------------------------------------
async def test_framing_chunk_ids_and_segment_text(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await send(ws, "config", voice="alloy", language_id="en", include_text=True)
        await send(ws, "text", text="Hello there. How are you")
        await send(ws, "text", text=" today? Fine, thanks. ")
        await send(ws, "flush")
        messages = await until_done(ws)
        assert all(isinstance(m, bytes) for m in messages[:-1]), messages[-1]
        got = frames(messages)
        assert [h["chunk_id"] for h, _ in got] == list(range(1, len(got) + 1))
        assert "text" in got[0][0]
        # min_chars 24 (Soprano's default): "Hello there." and "Fine, thanks." wait to be joined.
        assert segments(messages) == ["Hello there. How are you today?", "Fine, thanks."]

        await send(ws, "config", min_chars=0, min_words=0, include_text=False)
        await send(ws, "text", text="One. Two.")
        await send(ws, "flush")
        more = frames(await until_done(ws))
        assert [h["chunk_id"] for h, _ in more] == list(range(len(got) + 1, len(got) + len(more) + 1))
        assert not any("text" in h for h, _ in more)


async def test_text_without_punctuation_is_spoken_after_max_delay(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await send(ws, "config", max_delay_ms=150, include_text=True)
        started = time.monotonic()
        await send(ws, "text", text="the quick brown fox jumps over the lazy dog")  # no flush
        first = await receive(ws, timeout=10)
        waited = time.monotonic() - started
        assert isinstance(first, bytes), first
        assert parse_frame(first)[0]["text"] == "the quick brown fox jumps over the lazy dog"
        assert 0.1 < waited < 0.9, waited  # the delay, well before the 1 s pause rule would have fired

        await send(ws, "config", max_delay_ms=0)  # off: sentence ends, max_chars, a 1 s pause or flush
        await send(ws, "text", text="just two")
        late: list[Message] = []
        with pytest.raises(TimeoutError):
            while True:  # the previous text's remaining frames, and no new segment
                late.append(await receive(ws, timeout=0.6))
        assert segments(late) == []
        await send(ws, "flush")
        assert segments(await until_done(ws)) == ["just two"]


async def test_long_text_is_split_at_max_chars(embedded_server: Server) -> None:
    text = ("this sentence has no punctuation at all and keeps going on and on about nothing in particular "
            "until it has become far longer than forty characters")
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await send(ws, "config", max_chars=40, min_chars=0, include_text=True)
        await send(ws, "text", text=text)
        await send(ws, "flush")
        parts = segments(await until_done(ws))
        assert len(parts) >= 4 and all(len(p) <= 40 for p in parts), parts
        assert " ".join(parts) == text


# -- stop, bad input ---------------------------------------------------------------------------
async def test_stop_mid_speech_stops_audio_and_the_socket_goes_on(embedded_server: Server) -> None:
    long_text = " ".join(f"Sentence number {i} is here to make this a long answer." for i in range(30))
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await send(ws, "text", text=long_text)
        await send(ws, "flush")
        assert isinstance(await receive(ws), bytes)
        await send(ws, "stop")
        before_done = await until_done(ws)
        assert all(isinstance(m, bytes) for m in before_done[:-1])
        with pytest.raises(TimeoutError):  # nothing after done: not the rest, not the flush's done
            await receive(ws, timeout=1.5)
        heard = sum(len(pcm) for _, pcm in frames(before_done)) / 2 / 24000
        assert heard < 10, heard  # thirty sentences take far longer
        await speaks(ws)


@pytest.mark.parametrize("frame", [
    "not json",
    "[1, 2]",
    json.dumps({"type": "sing"}),
    json.dumps({"text": "no type"}),
    json.dumps({"type": "config", "speed": 10}),
    json.dumps({"type": "config", "max_chars": "many"}),
    json.dumps({"type": "config", "language_id": "klingon"}),
    json.dumps({"type": "config", "voice": "no-such-voice"}),
    json.dumps({"type": "config", "voice_path": "/models/voices/no-such-voice.wav"}),
    json.dumps({"type": "text"}),
    json.dumps({"type": "text", "text": "x" * 5000}),
    json.dumps({"type": "text", "text": "y " * 40000}),  # over --ws-max-message-bytes
    b"\x00\x01binary",
])
async def test_bad_input_is_an_error_and_the_socket_still_speaks(embedded_server: Server, frame: str | bytes) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await ws.send(frame)
        error = await receive(ws)
        assert isinstance(error, dict) and set(error) == {"type", "message"}, error
        assert error["type"] == "error" and error["message"]
        await speaks(ws)


async def test_voice_path_names_a_gateway_voice_by_its_stem(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await send(ws, "config", voice_path="/home/me/soprano/voices/alloy.wav", speed=1.5)
        fast = await speaks(ws, "A voice chosen by its file name.")
        await send(ws, "config", speed=1.0)  # only the speed changes; the voice stays
        normal = await speaks(ws, "A voice chosen by its file name.")
        fast_s, normal_s = (sum(len(p) for _, p in f) / 48000 for f in (fast, normal))
        assert fast_s < normal_s * 0.8, (fast_s, normal_s)


# -- auth, busy, metrics -----------------------------------------------------------------------
async def _refused(ws: ClientConnection, message: str) -> None:
    error = await receive(ws)
    assert error["type"] == "error" and message in error["message"], error
    await ws.wait_closed()
    assert ws.close_code == 1008


async def test_auth(keyed_server: Server) -> None:
    async with await connect(keyed_server) as ws:
        await _refused(ws, "needs an API key")
    async with await connect(keyed_server, additional_headers={"Authorization": "Bearer sk-wrong"}) as ws:
        await _refused(ws, "invalid API key")
    async with await connect(keyed_server, additional_headers={"Authorization": f"Bearer {keyed_server.api_key}"}) as ws:
        await ready(ws)
        await speaks(ws)
    async with await connect(keyed_server, query="?token=sk-from-file-456") as ws:
        await ready(ws)
    async with await connect(keyed_server, subprotocols=["auth.bearer.v1", keyed_server.api_key]) as ws:
        assert ws.subprotocol == "auth.bearer.v1"
        await ready(ws)


async def test_a_busy_server_is_an_error_and_the_socket_stays_usable(server_factory) -> None:
    server = server_factory("--max-concurrent", "1", "--max-queue", "0", "--max-segment-chars", "4000")
    long_text = " ".join(f"Sentence {i} keeps the only slot busy for a while." for i in range(40))
    async with await connect(server) as holder, await connect(server) as other:
        await ready(holder)
        await ready(other)
        await send(holder, "config", max_chars=4000, min_chars=4000)  # one segment: one long synthesis
        await send(holder, "text", text=long_text)
        await send(holder, "flush")
        assert isinstance(await receive(holder), bytes)
        await send(other, "text", text="Let me in.")
        await send(other, "flush")
        error, done = await receive(other), await receive(other)
        assert error["type"] == "error" and error["message"] and done == {"type": "done"}, (error, done)
        await send(holder, "stop")
        await until_done(holder)
        deadline = time.monotonic() + 15
        while True:
            try:
                await speaks(other, "Now there is room.")
                break
            except AssertionError:  # the holder's slot is handed back within a step
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
    metrics = httpx.get(server.url + "/metrics").text
    assert re.search(r'speech_gateway_websocket_sessions_opened_total\{route="soprano"\} 2\.0', metrics), metrics
    assert re.search(r'speech_gateway_requests_total\{[^}]*route="soprano"', metrics)
