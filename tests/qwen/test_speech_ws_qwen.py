"""Both speech WebSockets on the Qwen engine (tiny random checkpoints): the Makima sequence and text streamed in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import websockets

from tests.sockets.test_speak_ws import pcm16, receive, receive_until
from tests.sockets.test_stream_ws import sentences


async def test_makima_and_text_in_sequences_on_qwen(server_factory, tiny_base_dir: Path,
                                                    tiny_custom_voice_dir: Path) -> None:
    server = server_factory("--engine", "qwen", "--qwen-base", str(tiny_base_dir),
                            "--qwen-custom-voice", str(tiny_custom_voice_dir), timeout=240)

    # Makima: no start, default voice (the shipped clone voice on the Base model), PCM16 24 kHz.
    async with websockets.connect(server.ws_url + "/api/v1/speak") as ws:
        hello = await receive(ws)
        assert hello["type"] == "ready" and hello["voiceLoaded"] is True and "chinese" in hello["capabilities"]["languages"]
        await ws.send(json.dumps({"type": "speak", "text": "Hello."}))
        messages = await receive_until(ws, "audio_end", timeout=120)
        assert isinstance(messages[0], bytes) and messages[-1] == {"type": "audio_end"}
        samples = pcm16([m for m in messages if isinstance(m, bytes)])
        assert samples.size > 0 and np.abs(samples).max() > 0  # random weights: noise, but never silence
        assert (await receive(ws, 60))["type"] == "complete"

    # Text in, split mid-word and mid-sentence, on a CustomVoice speaker.
    async with websockets.connect(server.ws_url + "/v1/audio/speech/stream") as ws:
        await ws.send(json.dumps({"type": "session.config", "voice": "vivian", "language": "english"}))
        for piece in ["Good mor", "ning. Se", "e you."]:
            await ws.send(json.dumps({"type": "input.text", "text": piece}))
        first = await receive_until(ws, "audio.start", timeout=120)  # before input.done
        await ws.send(json.dumps({"type": "input.done"}))
        spoken = sentences([*first, *await receive_until(ws, "session.done", timeout=180)])
        assert [s["sentence_text"] for s in spoken] == ["Good morning.", "See you."]
        assert all(len(s["audio"]) > 0 for s in spoken)
