"""Chatterbox's default voice when the voice it names is deleted: requests naming no voice fall back to the
gateway's default (no 404s). On a tiny random Qwen3 Base checkpoint, the only engine here that clones."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.server import Server, start_server
from tests.voices.test_voices_api import build_checkpoints, encode, speechlike


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("chatterbox_qwen")
    base = build_checkpoints(root / "models", "base")["base"]
    # The gateway's default is the embedded voice (random weights would speak noise for long).
    started = start_server(root, "--engine", "qwen", "--qwen-base", str(base), "--qwen-threads", "1",
                           "--voice-map", "default=hibari-heart")
    yield started
    started.stop()


def test_deleting_the_default_voice_falls_back_to_the_gateways(server: Server) -> None:
    url = server.url
    gateway_default = httpx.get(url + "/api/voice/default", timeout=10).json()["voice"]
    assert gateway_default == "hibari-heart"
    clip = encode(speechlike(4.0), "wav")
    uploaded = httpx.post(url + "/api/voices/upload", files={"file": ("my_voice.wav", clip)}, timeout=120)
    assert uploaded.status_code == 200, uploaded.text
    voice = uploaded.json()["name"]
    chosen = httpx.post(url + "/api/voice/default", json={"voice_path": "my_voice.wav"}, timeout=10).json()
    assert chosen == {"voice_path": "my_voice.wav", "voice": voice}
    assert httpx.delete(f"{url}/v1/audio/voices/{voice}", timeout=30).status_code == 200
    # Before: every /api/tts naming no voice was a 404 until someone set the default again.
    spoken = httpx.post(url + "/api/tts", json={"text": "Hi."}, timeout=60)
    assert spoken.status_code == 200, spoken.text
    assert spoken.headers["x-voice"] == gateway_default and spoken.content[:4] == b"RIFF"
    assert httpx.get(url + "/api/voice/default", timeout=10).json() == {"voice_path": None, "voice": gateway_default}
    assert httpx.get(url + "/api/voices", timeout=10).json()["default_voice"] == gateway_default
