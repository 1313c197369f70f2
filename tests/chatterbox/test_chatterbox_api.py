"""The Chatterbox adapter against live gateways: HTTP routes, /ws/tts, auth, upload, default voice, busy."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from tests.conftest import decode_audio
from tests.server import Server

LONG_TEXT = " ".join(f"Sentence {i} keeps the only slot busy for a while." for i in range(40))


async def connect(server: Server, query: str = "", **kwargs: Any) -> ClientConnection:
    return await websockets.connect(server.ws_url + "/ws/tts" + query, **kwargs)


async def receive(ws: ClientConnection, timeout: float = 20) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def ready(ws: ClientConnection) -> dict:
    message = await receive(ws)
    assert message["type"] == "ready" and message["device"] == "cpu", message
    return message


async def say(ws: ClientConnection, request_id: str, text: str = "Hello there.", **fields: Any
              ) -> tuple[list[dict], dict]:
    """Send a say; its chunks and its done (or error)."""
    await ws.send(json.dumps({"type": "say", "id": request_id, "text": text, **fields}))
    chunks = []
    while True:
        message = await receive(ws, 30)
        if message["type"] != "chunk":
            return chunks, message
        assert message["id"] == request_id
        chunks.append(message)


def audio_of(chunks: list[dict]) -> bytes:
    return b"".join(base64.b64decode(c["data"]) for c in chunks)


async def error_for(ws: ClientConnection, frame: str | bytes) -> dict:
    await ws.send(frame)
    message = await receive(ws)
    assert message["type"] == "error" and message["message"], message
    return message


# -- HTTP ---------------------------------------------------------------------------------------
def test_health_and_voices(embedded_server: Server) -> None:
    health = httpx.get(embedded_server.url + "/health").json()
    assert health == {"status": "healthy", "loaded_models": ["standard", "turbo", "multilingual", "hibari"],
                      "device": "cpu", "version": "0.1.0"}
    listing = httpx.get(embedded_server.url + "/api/voices").json()
    assert listing["default_voice"] == "hibari-heart"
    assert [v["voice_path"] for v in listing["voices"]] == ["hibari-heart.wav"]


def test_tts_maps_path_model_language_and_format(embedded_server: Server) -> None:
    body = {"text": "Twelve words of speech, give or take a few, said at sixteen kilohertz.",
            "model": "turbo", "language_id": "en-US",
            "voice": {"audio_prompt_path": "/app/voices/hibari-heart.wav", "exaggeration": 1.5, "cfg_weight": 0.2,
                      "temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.2},
            "audio": {"format": "pcm_s16le", "sample_rate": 16000}}
    r = httpx.post(embedded_server.url + "/api/tts", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/pcm" and r.headers["x-voice"] == "hibari-heart"
    wav = httpx.post(embedded_server.url + "/api/tts", json={**body, "audio": {"sample_rate": 16000}}, timeout=30)
    assert wav.headers["content-type"] == "audio/wav" and struct.unpack("<I", wav.content[24:28])[0] == 16000
    # The same audio both ways: raw s16le at 16 kHz, and the WAV's data after its 44-byte header.
    assert len(r.content) == len(wav.content) - 44 and 1.5 < len(r.content) / 2 / 16000 < 10


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"text": "Hi.", "model": "gpt-5"}, 400, "model"),
    ({"text": "Hi.", "language_id": "sw"}, 400, "language_id"),
    ({"text": "Hi.", "audio": {"sample_rate": 12345}}, 400, "sample_rate"),
    ({"text": "Hi.", "audio": {"format": "mp3"}}, 400, "format"),
    ({"text": "Hi.", "voice": {"audio_prompt_path": "/etc/passwd"}}, 404, "voice"),
    ({"text": "Hi.", "voice": "nobody"}, 404, "voice"),
    ({"text": "x" * 5000}, 400, "text"),
    ({"text": "   "}, 400, "text"),
    ({"text": "Hi.", "voice": {"temperature": 9}}, 400, "temperature"),
    ({"voice": {}}, 400, "text"),
    ({"text": "Hi.", "audio": {"stream": 0}}, 400, "stream"),  # strict JSON: 0 is not a boolean
])
def test_tts_refusals_are_json_errors(embedded_server: Server, body: dict, status: int, param: str) -> None:
    r = httpx.post(embedded_server.url + "/api/tts", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert param in (error["param"] or "") + error["message"], error
    if "passwd" in json.dumps(body):
        assert "'passwd'" in error["message"]  # the stem is a voice name; the path is never opened


def test_default_voice_set_get_and_used(embedded_server: Server) -> None:
    url = embedded_server.url + "/api/voice/default"
    try:
        assert httpx.get(url).json() == {"voice_path": None, "voice": "hibari-heart"}
        r = httpx.post(url, json={"voice_path": "Hibari-Heart.wav"})
        assert r.status_code == 200 and r.json() == {"voice_path": "Hibari-Heart.wav", "voice": "hibari-heart"}
        missing = httpx.post(url, json={"voice_path": "my_voice.wav"})
        assert missing.status_code == 404 and "my_voice" in missing.json()["error"]["message"]
        assert httpx.get(url).json()["voice_path"] == "Hibari-Heart.wav"  # a refused change changes nothing
        assert httpx.post(embedded_server.url + "/api/tts", json={"text": "Hi."}).headers["x-voice"] == "hibari-heart"
    finally:
        assert httpx.post(url, json={"voice_path": None}).json() == {"voice_path": None, "voice": "hibari-heart"}


def test_upload_goes_through_the_import_rules_and_leaves_nothing(embedded_server: Server) -> None:
    voices = Path(embedded_server.args[embedded_server.args.index("--voices-dir") + 1])
    before = sorted(voices.rglob("*")) if voices.exists() else []
    clip = httpx.post(embedded_server.url + "/api/tts", json={"text": "A clip to clone, five seconds or so of it."})
    r = httpx.post(embedded_server.url + "/api/voices/upload", files={"file": ("my_voice.wav", clip.content)})
    assert r.status_code == 400 and "Qwen3 Base model" in r.json()["error"]["message"], r.text
    no_file = httpx.post(embedded_server.url + "/api/voices/upload", files={"other": ("x.wav", clip.content)})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    as_json = httpx.post(embedded_server.url + "/api/voices/upload", json={"file": "x"})
    assert as_json.status_code == 400 and "multipart" in as_json.json()["error"]["message"]
    assert (sorted(voices.rglob("*")) if voices.exists() else []) == before
    assert [v["name"] for v in httpx.get(embedded_server.url + "/api/voices").json()["voices"]] == ["hibari-heart"]


# -- /ws/tts --------------------------------------------------------------------------------------
async def test_say_chunks_rate_wav_and_one_shot(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        chunks, done = await say(ws, "a", audio={"sample_rate": 16000, "chunk_size_ms": 50})
        assert done["type"] == "done" and done["id"] == "a"
        sizes = [len(base64.b64decode(c["data"])) for c in chunks]
        assert set(sizes[:-1]) == {1600} and 0 < sizes[-1] <= 1600  # 50 ms of 16 kHz s16le
        assert abs(sum(sizes) / 2 / 16000 - done["duration_seconds"]) < 0.01

        chunks, done = await say(ws, "b", audio={"format": "wav", "stream": False})
        assert len(chunks) == 1 and chunks[0]["is_last"] and chunks[0]["index"] == 0
        samples, _ = decode_audio(audio_of(chunks), "wav")
        assert abs(samples.size / 24000 - done["duration_seconds"]) < 0.01
        # The one chunk's JSON is built around the audio as it comes: an id full of JSON still round-trips.
        odd = 'b","data":"\\"'
        chunks, done = await say(ws, odd, audio={"stream": False, "sample_rate": 16000})
        assert len(chunks) == 1 and done["id"] == odd
        assert abs(len(base64.b64decode(chunks[0]["data"])) / 2 / 16000 - done["duration_seconds"]) < 0.01

        chunks, done = await say(ws, "c", audio={"format": "wav", "chunk_size_ms": 100})
        data = audio_of(chunks)
        assert data[:4] == b"RIFF" and len(base64.b64decode(chunks[0]["data"])) == 44 + 4800
        assert abs((len(data) - 44) / 2 / 24000 - done["duration_seconds"]) < 0.01


async def test_malformed_messages_get_an_error_and_the_socket_keeps_serving(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        assert (await error_for(ws, "not json"))["id"] is None
        assert "unknown message type" in (await error_for(ws, json.dumps({"type": "sing", "id": "s"})))["message"]
        missing = await error_for(ws, json.dumps({"type": "say", "id": "m1"}))
        assert missing["id"] == "m1" and "text" in missing["message"]
        no_id = await error_for(ws, json.dumps({"type": "say", "text": "Hi."}))
        assert "id" in no_id["message"]
        voice = await error_for(ws, json.dumps({"type": "say", "id": "v", "text": "Hi.", "voice": "nobody"}))
        assert voice == {**voice, "id": "v", "code": "voice_not_found"}
        model = await error_for(ws, json.dumps({"type": "say", "id": "md", "text": "Hi.", "model": "nope"}))
        assert model["id"] == "md" and "standard" in model["message"]
        language = await error_for(ws, json.dumps({"type": "say", "id": "l", "text": "Hi.", "language_id": "xx"}))
        assert language["id"] == "l"
        assert "binary" in (await error_for(ws, b"\x00\x01"))["message"]
        huge = await error_for(ws, json.dumps({"type": "say", "id": "h", "text": "a" * 70_000}))
        assert "larger than" in huge["message"]
        chunks, done = await say(ws, "after", "Still here.")
        assert done == {"type": "done", "id": "after", "duration_seconds": done["duration_seconds"]} and chunks


async def test_set_voice_sets_the_server_default(embedded_server: Server) -> None:
    async with await connect(embedded_server) as ws:
        await ready(ws)
        await ws.send(json.dumps({"type": "set_voice", "voice_path": "hibari-heart.wav"}))
        assert await receive(ws) == {"type": "voice_set", "voice_path": "hibari-heart.wav", "voice": "hibari-heart"}
        assert httpx.get(embedded_server.url + "/api/voice/default").json()["voice_path"] == "hibari-heart.wav"
        refused = await error_for(ws, json.dumps({"type": "set_voice", "voice_path": "ghost.wav", "id": "g"}))
        assert refused["id"] == "g" and refused["code"] == "voice_not_found"
        await ws.send(json.dumps({"type": "set_voice", "voice_path": None}))
        assert (await receive(ws))["voice_path"] is None
    assert httpx.get(embedded_server.url + "/api/voice/default").json()["voice_path"] is None


# -- auth, busy, metrics --------------------------------------------------------------------------
async def test_auth_on_http_and_the_socket(keyed_server: Server) -> None:
    url, key = keyed_server.url, keyed_server.api_key
    assert httpx.get(url + "/health").status_code == 200  # like /healthz: no key needed
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        for method, path, kwargs in (("POST", "/api/tts", {"json": {"text": "Hi."}}), ("GET", "/api/voices", {}),
                                     ("POST", "/api/voice/default", {"json": {"voice_path": None}}),
                                     ("POST", "/api/voices/upload", {"files": {"file": ("a.wav", b"RIFF")}})):
            r = httpx.request(method, url + path, headers=headers, **kwargs)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, r.text)
    ok = httpx.post(url + "/api/tts", json={"text": "Hi."}, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.content[:4] == b"RIFF"

    for query, kwargs in (("", {}), ("?token=sk-wrong", {})):
        async with await connect(keyed_server, query, **kwargs) as ws:
            refused = await receive(ws)
            assert refused["type"] == "error" and refused["code"] == "invalid_api_key"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd.code == 1008
    for query, kwargs in (("?token=sk-from-file-456", {}), ("", {"additional_headers": {"Authorization": f"Bearer {key}"}}),
                          ("", {"subprotocols": ["auth.bearer.v1", key]})):
        async with await connect(keyed_server, query, **kwargs) as ws:
            await ready(ws)
            chunks, done = await say(ws, "k", "Authorized.")
            assert done["type"] == "done" and chunks


async def test_a_busy_server_answers_with_the_protocols_errors(server_factory) -> None:
    server = server_factory("--max-concurrent", "1", "--max-queue", "0", "--ws-max-queued-utterances", "1")
    async with await connect(server) as first, await connect(server) as second:
        await ready(first)
        await ready(second)
        await first.send(json.dumps({"type": "say", "id": "long", "text": LONG_TEXT}))
        assert (await receive(first))["type"] == "chunk"  # the only slot is taken
        r = httpx.post(server.url + "/api/tts", json={"text": "Me too."})
        assert r.status_code == 429 and r.json()["error"]["code"] == "server_overloaded" and "retry-after" in r.headers
        _, busy = await say(second, "b1", "Me too.")
        assert busy == {**busy, "type": "error", "id": "b1", "code": "server_overloaded"}
        # The first socket's own queue: one waits, the next is refused with its id.
        await first.send(json.dumps({"type": "say", "id": "q1", "text": "Queued."}))
        await first.send(json.dumps({"type": "say", "id": "q2", "text": "One too many."}))
        seen: dict[str, list[str]] = {}
        while "q1" not in seen or seen["q1"][-1] != "done":
            message = await receive(first, 60)
            seen.setdefault(message["id"], []).append(message["type"])
        assert seen["q2"] == ["error"] and seen["long"][-1] == "done" and seen["q1"][-1] == "done"
        _, done = await say(second, "b2", "Now it works.")  # the slot is back
        assert done["type"] == "done"
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    routes = {(s.labels["route"], s.labels["status"]) for s in families["speech_gateway_requests"].samples
              if s.name.endswith("_total")}
    assert {("chatterbox", "200"), ("chatterbox", "429")} <= routes, routes
