"""/api/v1/speak against a live gateway, with a real WebSocket client: the Makima client's exact sequence,
cancel, queueing, priority, formats, malformed frames, limits and every way to authenticate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.server import Server

LONG_TEXT = " ".join(f"This is sentence number {i} of a long answer that keeps going for a while." for i in range(1, 31))
FIRST = "First."
SECOND = "The second utterance is clearly longer than the first one, by a good margin of words."

Message = bytes | dict[str, Any]


async def connect(server: Server, **kwargs: Any) -> ClientConnection:
    return await websockets.connect(server.ws_url + "/api/v1/speak" + kwargs.pop("query", ""), **kwargs)


async def receive(ws: ClientConnection, timeout: float = 20) -> Message:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return raw if isinstance(raw, bytes) else json.loads(raw)


async def receive_until(ws: ClientConnection, kind: str, count: int = 1, timeout: float = 30) -> list[Message]:
    """Every message up to and including the `count`-th event of type `kind`."""
    out: list[Message] = []
    seen = 0
    while seen < count:
        message = await receive(ws, timeout)
        out.append(message)
        if isinstance(message, dict) and message["type"] == kind:
            seen += 1
    return out


async def ready(ws: ClientConnection) -> dict:
    message = await receive(ws)
    assert isinstance(message, dict) and message["type"] == "ready", message
    return message


def frames(messages: list[Message]) -> list[bytes]:
    return [m for m in messages if isinstance(m, bytes)]


def events(messages: list[Message], kind: str | None = None) -> list[dict]:
    return [m for m in messages if isinstance(m, dict) and (kind is None or m["type"] == kind)]


def pcm16(chunks: list[bytes]) -> np.ndarray:
    assert all(len(c) > 0 and len(c) % 2 == 0 for c in chunks), [len(c) for c in chunks if len(c) % 2 or not c]
    return np.frombuffer(b"".join(chunks), "<i2")


async def assert_quiet(ws: ClientConnection, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        message = await receive(ws, seconds)
        pytest.fail(f"unexpected message: {message if isinstance(message, dict) else f'{len(message)} bytes'}")


async def speak_once(ws: ClientConnection, text: str) -> tuple[list[bytes], dict]:
    await ws.send(json.dumps({"type": "speak", "text": text}))
    messages = await receive_until(ws, "complete")
    assert [e["type"] for e in events(messages)] == ["audio_end", "complete"], events(messages)
    return frames(messages), events(messages, "complete")[0]


async def test_makima_sequence_without_start(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        hello = await ready(ws)
        assert hello["voiceLoaded"] is True and hello["sessionId"]
        caps = hello["capabilities"]
        assert caps["streaming"] is True and "english" in caps["languages"]
        assert 24000 in caps["sampleRates"] and "pcm16" in caps["encodings"]

        await ws.send(json.dumps({"type": "speak", "text": "Hello from the speech gateway. This is a test."}))
        messages = await receive_until(ws, "audio_end")
        assert isinstance(messages[0], bytes), "audio comes first, no other event before it"
        assert messages[-1] == {"type": "audio_end"}
        samples = pcm16(frames(messages))
        assert 1.0 < samples.size / 24000 < 10.0
        rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768) ** 2)))
        assert rms > 0.01, "the audio is not silence"
        complete = await receive(ws)
        assert complete["type"] == "complete"
        assert complete["charactersProcessed"] == len("Hello from the speech gateway. This is a test.")
        assert abs(complete["audioLengthMs"] - samples.size / 24) <= 1
        assert complete["durationMs"] >= 0

        await ws.send(json.dumps({"type": "stop"}))
        assert await receive(ws) == {"type": "stopped", "reason": "client"}
        await ws.wait_closed()
        assert ws.close_code == 1000


LEAD = 0.5  # --ws-speak-lead's default, which embedded_server runs with


async def test_cancel_from_a_real_time_player_stops_within_the_lead(embedded_server: Server) -> None:
    """A client that plays frames at real time (as the Makima hook does) and cancels mid-utterance
    hears at most the lead of audio after its click: frames are paced, not sent as one burst."""
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "text": LONG_TEXT}))
        clock = asyncio.get_running_loop().time
        first = await receive(ws)
        assert isinstance(first, bytes)
        started = clock()  # playback starts with the first frame
        received = len(first) / 2 / 24000
        while clock() - started < 1.5:
            message = await receive(ws)
            assert isinstance(message, bytes), message
            received += len(message) / 2 / 24000
            ahead = received - (clock() - started)
            assert ahead <= LEAD + 0.05, f"{ahead:.2f}s ahead of playback: a burst"
        await ws.send(json.dumps({"type": "cancel"}))  # the click; the player drops what it queued
        after_click = await receive_until(ws, "cancelled")
        late = pcm16(frames(after_click)).size / 24000
        assert late <= LEAD + 0.05, f"{late:.2f}s of the cancelled utterance arrived after the click"
        assert events(after_click) == [{"type": "cancelled", "reason": "cancel", "utterances": 1}]
        assert await receive(ws) == {"type": "audio_end"}  # the hook's way back to idle
        await assert_quiet(ws)  # not one frame of it after the acknowledgement

        chunks, complete = await speak_once(ws, "And now something else.")
        assert complete["charactersProcessed"] == len("And now something else.")
        assert pcm16(chunks).size > 0

        await ws.send(json.dumps({"type": "cancel"}))  # nothing playing: still acknowledged
        assert await receive(ws) == {"type": "cancelled", "reason": "cancel", "utterances": 0}


async def test_two_speaks_queue_and_never_interleave(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "text": FIRST}))
        await ws.send(json.dumps({"type": "speak", "text": SECOND}))
        messages = await receive_until(ws, "complete", count=2)
        kinds = [m["type"] if isinstance(m, dict) else "audio" for m in messages]
        end1 = kinds.index("audio_end")
        # audio… audio_end complete audio… audio_end complete: one utterance after the other
        assert set(kinds[:end1]) == {"audio"} and kinds[end1 + 1] == "complete"
        assert set(kinds[end1 + 2 : -2]) == {"audio"} and kinds[-2:] == ["audio_end", "complete"]
        first, second = pcm16(frames(messages[:end1])), pcm16(frames(messages[end1 + 2 :]))
        c1, c2 = events(messages, "complete")
        assert (c1["charactersProcessed"], c2["charactersProcessed"]) == (len(FIRST), len(SECOND))
        assert abs(c1["audioLengthMs"] - first.size / 24) <= 1 and abs(c2["audioLengthMs"] - second.size / 24) <= 1
        assert second.size > 2 * first.size


async def test_priority_high_replaces_the_current_utterance(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "text": LONG_TEXT}))
        await ws.send(json.dumps({"type": "speak", "text": LONG_TEXT}))  # queued behind it
        assert isinstance(await receive(ws), bytes)
        await ws.send(json.dumps({"type": "speak", "text": "Urgent news.", "priority": "high"}))
        messages = await receive_until(ws, "complete")
        ack_at = messages.index({"type": "cancelled", "reason": "replaced", "utterances": 2})
        assert not events(messages[:ack_at])
        assert messages[ack_at + 1] == {"type": "audio_end"}  # ends the replaced utterance
        after = messages[ack_at + 2 :]
        assert [e["type"] for e in events(after)] == ["audio_end", "complete"]
        assert events(after, "complete")[0]["charactersProcessed"] == len("Urgent news.")
        assert pcm16(frames(after)).size > 0
        await assert_quiet(ws)  # the dropped queue never plays


async def test_start_resamples_and_sends_float32(embedded_server: Server) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    async with await connect(embedded_server) as ws:
        await ready(ws)
        reference = pcm16((await speak_once(ws, text))[0]).size  # 24 kHz pcm16, the default

        await ws.send(json.dumps({"type": "start", "sampleRate": 16000, "encoding": "pcm32f", "voice": "default",
                                  "language": "English"}))
        started = await receive(ws)
        assert started == {"type": "started", "sampleRate": 16000, "encoding": "pcm32f", "voice": "hibari-heart",
                           "language": "english"}
        chunks, complete = await speak_once(ws, text)
        assert all(c and len(c) % 4 == 0 for c in chunks)
        audio = np.frombuffer(b"".join(chunks), "<f4")
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.05
        assert audio.size == pytest.approx(reference * 16000 / 24000, abs=160)
        assert complete["audioLengthMs"] == pytest.approx(audio.size / 16, abs=1)

        await ws.send(json.dumps({"type": "start", "sampleRate": 16000}))  # pcm16 again, still 16 kHz
        assert (await receive(ws))["encoding"] == "pcm16"
        assert pcm16((await speak_once(ws, text))[0]).size == pytest.approx(reference * 2 / 3, abs=160)


MALFORMED: list[tuple[str | bytes, str]] = [
    ("this is not json", "INVALID_TEXT"),
    ("[1, 2, 3]", "INVALID_TEXT"),
    (json.dumps({"text": "no type"}), "INVALID_TEXT"),
    (json.dumps({"type": "dance"}), "INVALID_TEXT"),
    (json.dumps({"type": "speak"}), "INVALID_TEXT"),
    (json.dumps({"type": "speak", "text": 42}), "INVALID_TEXT"),
    (json.dumps({"type": "speak", "text": "   "}), "INVALID_TEXT"),
    (json.dumps({"type": "speak", "text": "x" * 5000}), "INVALID_TEXT"),
    (json.dumps({"type": "speak", "text": "hi", "priority": "urgent"}), "INVALID_TEXT"),
    (json.dumps({"type": "speak", "text": "y" * 70_000}), "INVALID_TEXT"),  # beyond ws_max_message_bytes
    (b"\x00\x01\x02\x03", "INVALID_TEXT"),
    (json.dumps({"type": "start", "sampleRate": 12345}), "INVALID_TEXT"),
    (json.dumps({"type": "start", "encoding": "mp3"}), "INVALID_TEXT"),
    (json.dumps({"type": "start", "language": "klingon"}), "INVALID_TEXT"),
    (json.dumps({"type": "start", "voice": "no-such-voice"}), "VOICE_NOT_FOUND"),
]


async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        for frame, code in MALFORMED:
            await ws.send(frame)
            error = await receive(ws)
            assert isinstance(error, dict) and error["type"] == "error", (frame[:60], error)
            assert error["code"] == code and error["recoverable"] is True and error["message"], (frame[:60], error)
        chunks, _ = await speak_once(ws, "Still here.")
        assert pcm16(chunks).size > 0


async def test_queue_bound_idle_timeout_and_a_slot_per_utterance(server_factory) -> None:
    server = server_factory("--ws-max-queued-utterances", "2", "--ws-idle-timeout", "4", "--max-concurrent", "1",
                            "--max-queue", "0", "--queue-timeout", "1")
    async with await connect(server) as a, await connect(server) as b:
        await ready(a)
        await ready(b)
        # One synthesis at a time server-wide and no server queue: an idle socket holding a slot would
        # make b's speak fail with RATE_LIMITED.
        await speak_once(a, "The first socket speaks.")
        chunks, _ = await speak_once(b, "The second socket speaks while the first one stays open.")
        assert pcm16(chunks).size > 0

        for _ in range(5):  # one playing + two queued fit, the rest are refused
            await a.send(json.dumps({"type": "speak", "text": LONG_TEXT}))
        refused = []
        while len(refused) < 2:
            message = await receive(a)
            if isinstance(message, dict):
                assert message["type"] == "error", message
                refused.append(message)
        assert all(e["code"] == "RATE_LIMITED" and e["recoverable"] for e in refused)
        await a.send(json.dumps({"type": "cancel"}))
        ack = events(await receive_until(a, "cancelled"))[-1]
        assert ack["utterances"] == 3

        # Idle: nothing received and nothing playing for 4 s closes the socket normally (speaking is paced:
        # a shorter timeout would close b while a speaks its first sentence in real time).
        assert await receive(b, timeout=10) == {"type": "stopped", "reason": "idle"}
        await b.wait_closed()
        assert b.close_code == 1000


# -- auth -------------------------------------------------------------------------------------
async def test_a_busy_server_answers_the_speak_with_an_error(server_factory) -> None:
    """The admission refusal itself (no slot, no server queue) reaches the client as RATE_LIMITED at once,
    instead of the utterance waiting forever for audio; the socket speaks again once the slot is back."""
    server = server_factory("--max-concurrent", "1", "--max-queue", "0")
    async with await connect(server) as a, await connect(server) as b:
        await ready(a)
        await ready(b)
        await a.send(json.dumps({"type": "speak", "text": LONG_TEXT}))  # paced: holds the one slot for a minute
        assert isinstance(await receive(a), bytes)
        await b.send(json.dumps({"type": "speak", "text": "Is there room for me?"}))
        refused = await receive(b, timeout=5)
        assert isinstance(refused, dict) and refused["type"] == "error", refused
        assert refused["code"] == "RATE_LIMITED" and refused["recoverable"] is True
        await a.send(json.dumps({"type": "cancel"}))
        await receive_until(a, "audio_end")
        chunks, _ = await speak_once(b, "Now there is.")
        assert pcm16(chunks).size > 0


async def _speaks(ws: ClientConnection) -> None:
    await ready(ws)
    chunks, _ = await speak_once(ws, "Authorized.")
    assert pcm16(chunks).size > 0


async def _refused(ws: ClientConnection, *, after_ready: bool) -> None:
    if after_ready:
        await ready(ws)
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == "UNAUTHORIZED" and error["recoverable"] is False
    await ws.wait_closed()
    assert ws.close_code == 1008


async def test_auth_bearer_header_query_token_and_subprotocol(keyed_server: Server) -> None:
    key = keyed_server.api_key
    async with await connect(keyed_server, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await _speaks(ws)
    async with await connect(keyed_server, query="?token=sk-from-file-456") as ws:
        await _speaks(ws)
    async with await connect(keyed_server, subprotocols=["auth.bearer.v1", key]) as ws:
        assert ws.subprotocol == "auth.bearer.v1"
        await _speaks(ws)


async def test_auth_start_token_and_refusals(keyed_server: Server) -> None:
    async with await connect(keyed_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "start", "authToken": keyed_server.api_key}))
        assert (await receive(ws))["type"] == "started"
        chunks, _ = await speak_once(ws, "Authorized by start.")
        assert pcm16(chunks).size > 0
    async with await connect(keyed_server) as ws:  # the Makima client: no key, straight to speak
        await ready(ws)
        await ws.send(json.dumps({"type": "speak", "text": "Let me in."}))
        await _refused(ws, after_ready=False)
    async with await connect(keyed_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "start", "authToken": "sk-wrong"}))
        await _refused(ws, after_ready=False)
    async with await connect(keyed_server, additional_headers={"Authorization": "Bearer sk-wrong"}) as ws:
        await _refused(ws, after_ready=False)
    async with await connect(keyed_server, query="?token=sk-wrong") as ws:
        await _refused(ws, after_ready=False)
    async with await connect(keyed_server, subprotocols=["auth.bearer.v1", "sk-wrong"]) as ws:
        await _refused(ws, after_ready=False)


def test_frames_are_converted_as_they_are_taken() -> None:
    """The sender takes a frame, sends it, then takes the next: the first frame of a sentence-long chunk is
    ready before the others are converted."""
    from app.sockets.audio import PcmFramer

    framer = PcmFramer(frame_seconds=0.25)
    frames = framer.push(np.linspace(-1, 1, 3 * 24000, dtype=np.float32))
    assert framer.seconds_out == 0
    first = next(frames)
    assert len(first) == 6000 * 2 and framer.seconds_out == 0.25
    assert len(list(frames)) == 11 and framer.seconds_out == 3.0


@pytest.mark.parametrize(("encoding", "rate"), [("ulaw", None), ("alaw", None), ("ulaw", 16000), ("alaw", 24000)])
async def test_start_sends_g711(embedded_server: Server, encoding: str, rate: int | None) -> None:
    from tests.audio.decode import band_energy, decode

    text = "The quick brown fox jumps over the lazy dog."
    async with await connect(embedded_server) as ws:
        await ready(ws)
        reference = pcm16((await speak_once(ws, text))[0]).astype(np.float32) / 32768  # 24 kHz pcm16
        start = {"type": "start", "encoding": encoding} | ({"sampleRate": rate} if rate else {})
        await ws.send(json.dumps(start))
        started = await receive(ws)
        expected_rate = rate or 8000  # G.711 defaults to telephony's 8 kHz
        assert started["encoding"] == encoding and started["sampleRate"] == expected_rate
        chunks, complete = await speak_once(ws, text)
    assert all(chunks)
    data = b"".join(chunks)
    assert len(data) == pytest.approx(reference.size * expected_rate / 24000, abs=expected_rate * 0.16)
    assert complete["audioLengthMs"] == pytest.approx(len(data) * 1000 / expected_rate, abs=1)
    ours = decode(encoding, data, 8000, source_rate=expected_rate)
    theirs = decode("pcm", (reference * 32768).astype("<i2").tobytes(), 8000, source_rate=24000)
    n = min(ours.size, theirs.size)
    assert band_energy(ours[:n], 8000) == pytest.approx(band_energy(theirs[:n], 8000), rel=0.1)
