"""`/ws/tts` with `audio.stream: false` holds about one copy of the audio it returns, not one per step of
turning it into a message (collected bytes, a copy of them, base64, the message's JSON, that JSON as text).

In process (Litestar's test client, the embedded engine), so tracemalloc sees every allocation the say costs."""

from __future__ import annotations

import asyncio
import base64
import json
import tracemalloc
from pathlib import Path

from litestar.testing import TestClient

from app.chatterbox.session import whole_chunk
from app.main import create_app
from app.settings import Settings
from tests.conftest import decode_audio

TEXT = ("Sentence number keeps the engine busy for a little while longer. " * 30)[:2000]  # ~2 min of audio


def test_a_whole_audio_say_holds_about_one_copy_of_its_message(tmp_path: Path) -> None:
    app = create_app(Settings(voices_dir=str(tmp_path / "voices")))
    say = {"type": "say", "id": "a", "text": TEXT, "audio": {"format": "wav", "sample_rate": 48000, "stream": False}}
    with TestClient(app) as client, client.websocket_connect("/ws/tts") as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({**say, "id": "warm", "text": "Warm up."})  # the engine's own first-use allocations
        assert [json.loads(ws.receive_text())["type"] for _ in range(2)] == ["chunk", "done"]
        tracemalloc.start()
        try:
            ws.send_json(say)
            message = ws.receive_text()  # the very text the session built: the client side adds no copy
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        done = ws.receive_json()
    chunk = json.loads(message)
    assert (chunk["type"], chunk["id"], chunk["index"], chunk["is_last"]) == ("chunk", "a", 0, True)
    samples, _ = decode_audio(base64.b64decode(chunk["data"]), "wav")
    assert done["type"] == "done" and abs(samples.size / 24000 - done["duration_seconds"]) < 0.01
    assert len(message) > 10_000_000  # 48 kHz WAV, base64: the copies dwarf what synthesis itself holds
    # The message once, plus itself again for the instant its text is made from the bytes it was built in
    # (and allocator slack). Building it after the audio was complete peaked at ~5 times its size.
    assert peak < 2.5 * len(message), peak / len(message)


def test_a_whole_audio_chunk_keeps_any_say_id() -> None:
    """The message is built from msgspec's UTF-8 bytes: an id outside ASCII is kept, not an internal error."""

    async def body():  # noqa: ANN202 - pieces whose lengths are not multiples of 3
        for piece in (b"abcd", b"ef", b"g"):
            yield piece

    message = json.loads(asyncio.run(whole_chunk("señal-音", body())))
    assert (message["id"], message["index"], message["is_last"]) == ("señal-音", 0, True)
    assert base64.b64decode(message["data"]) == b"abcdefg"
