"""/v1/audio/speech/stream against a live gateway: LLM-style text in pieces, sentences of speech out."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.server import Server

TEXT = (
    "The weather today is sunny, with a light breeze from the west. Tomorrow, clouds will roll in "
    "during the afternoon! Will it rain? Probably not until the evening, when a cold front arrives from "
    "the north and temperatures drop by several degrees. Pack an umbrella anyway."
)
Message = bytes | dict[str, Any]


async def connect(server: Server, query: str = "", **kwargs: Any) -> ClientConnection:
    return await websockets.connect(server.ws_url + "/v1/audio/speech/stream" + query, **kwargs)


async def receive(ws: ClientConnection, timeout: float = 20) -> Message:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return raw if isinstance(raw, bytes) else json.loads(raw)


async def receive_until(ws: ClientConnection, kind: str, timeout: float = 30) -> list[Message]:
    out: list[Message] = []
    while not out or not (isinstance(out[-1], dict) and out[-1]["type"] == kind):
        out.append(await receive(ws, timeout))
    return out


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


def sentences(messages: list[Message]) -> list[dict]:
    """Check the per-sentence framing; returns each sentence's audio.start with its audio attached."""
    out: list[dict] = []
    current: dict | None = None
    for m in messages:
        if isinstance(m, bytes):
            assert current is not None, "audio outside audio.start … audio.done"
            assert m and len(m) % 2 == 0
            current["audio"] += m
        elif m["type"] == "audio.start":
            assert current is None, "sentences interleaved"
            current = {**m, "audio": b""}
        elif m["type"] == "audio.done":
            assert current is not None and m["sentence_index"] == current["sentence_index"]
            assert m["total_bytes"] == len(current["audio"]) and m["error"] is False
            out.append(current)
            current = None
    assert current is None
    assert [s["sentence_index"] for s in out] == list(range(len(out)))
    return out


async def test_text_split_anywhere_is_spoken_sentence_by_sentence(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await send(ws, "session.config", voice="alloy", language="en", response_format="pcm")
        cut = TEXT.index("Tomorrow") + 5  # the first sentence and half a word of the second
        for i in range(0, cut, 7):  # 7-character pieces split words and sentences anywhere
            await send(ws, "input.text", text=TEXT[i : min(i + 7, cut)])
        first = await receive_until(ws, "audio.start")
        assert first[-1]["sentence_text"] == "The weather today is sunny, with a light breeze from the west."
        first.append(await receive(ws))
        assert isinstance(first[-1], bytes), "audio flows before input.done was sent"

        for i in range(cut, len(TEXT), 11):
            await send(ws, "input.text", text=TEXT[i : i + 11])
        await send(ws, "input.done")
        messages = [*first, *await receive_until(ws, "session.done")]
        spoken = sentences(messages)
        assert " ".join(s["sentence_text"] for s in spoken) == " ".join(TEXT.split())
        assert len(spoken) == 5 and messages[-1] == {"type": "session.done", "total_sentences": 5}
        for s in spoken:
            assert s["format"] == "pcm" and s["sample_rate"] == 24000
            audio = np.frombuffer(s["audio"], "<i2").astype(np.float32) / 32768
            assert audio.size > 0.3 * 24000 and np.sqrt(np.mean(audio**2)) > 0.01


async def test_pause_flush_then_a_second_session_on_the_same_socket(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await send(ws, "session.config")
        words = "well then I suppose we should get going soon"
        sent_at = time.monotonic()
        await send(ws, "input.text", text=words)  # no punctuation: only the pause releases it
        start = (await receive_until(ws, "audio.start", timeout=10))[-1]
        assert start["sentence_text"] == "well then I suppose we should get going"  # "soon" might go on
        assert 0.8 < time.monotonic() - sent_at < 5
        await send(ws, "input.done")
        spoken = sentences([start, *await receive_until(ws, "session.done")])
        assert [s["sentence_text"] for s in spoken] == ["well then I suppose we should get going", "soon"]

        # A new session: new config (16 kHz), indexes restart at 0.
        await send(ws, "session.config", sample_rate=16000, speed=1.0)
        await send(ws, "input.text", text="Second session. ")
        await send(ws, "input.text", text="It has two sentences.")
        await send(ws, "input.done")
        messages = await receive_until(ws, "session.done")
        spoken = sentences(messages)
        assert [s["sentence_text"] for s in spoken] == ["Second session.", "It has two sentences."]
        assert all(s["sample_rate"] == 16000 for s in spoken)
        assert messages[-1]["total_sentences"] == 2


async def test_session_close_finishes_then_closes(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await send(ws, "input.text", text="No config, no input.done, just close")  # defaults apply
        await send(ws, "session.close")
        messages = await receive_until(ws, "session.done")
        assert [s["sentence_text"] for s in sentences(messages)] == ["No config, no input.done, just close"]
        await ws.wait_closed()
        assert ws.close_code == 1000


MALFORMED: list[tuple[str | bytes, str]] = [
    ("not json at all", "INVALID_TEXT"),
    (json.dumps({"type": "input.audio"}), "INVALID_TEXT"),
    (json.dumps({"type": "input.text"}), "INVALID_TEXT"),
    (json.dumps({"type": "input.text", "text": ["a"]}), "INVALID_TEXT"),
    (json.dumps({"type": "session.config", "response_format": "mp3"}), "INVALID_TEXT"),
    (json.dumps({"type": "session.config", "speed": 9}), "INVALID_TEXT"),
    (json.dumps({"type": "session.config", "voice": "nobody"}), "VOICE_NOT_FOUND"),
    (json.dumps({"type": "session.config", "model": "whisper-1"}), "INVALID_TEXT"),
    (b"\x01\x02", "INVALID_TEXT"),
]


async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        for frame, code in MALFORMED:
            await ws.send(frame)
            error = await receive(ws)
            assert error["type"] == "error" and error["code"] == code and error["message"], (frame, error)
        await send(ws, "input.text", text="Half a sentence")
        await send(ws, "session.config", voice="alloy")  # not in the middle of a session
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "INVALID_TEXT" and error["recoverable"] is True
        await send(ws, "input.done")
        spoken = sentences(await receive_until(ws, "session.done"))
        assert [s["sentence_text"] for s in spoken] == ["Half a sentence"]


@pytest.mark.parametrize("how", ["missing", "wrong"])
async def test_auth_refusal_closes_with_policy_violation(keyed_server: Server, how: str) -> None:
    async with await connect(keyed_server, "?token=sk-wrong" if how == "wrong" else "") as ws:
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "UNAUTHORIZED" and error["recoverable"] is False
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_auth_accepted_by_header_and_subprotocol(keyed_server: Server) -> None:
    key = keyed_server.api_key
    for kwargs in ({"additional_headers": {"Authorization": f"Bearer {key}"}},
                   {"subprotocols": ["auth.bearer.v1", key]}):
        async with await connect(keyed_server, **kwargs) as ws:
            await send(ws, "input.text", text="Authorized.")
            await send(ws, "input.done")
            assert len(sentences(await receive_until(ws, "session.done"))) == 1
