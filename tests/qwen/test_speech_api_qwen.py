"""`speech-gateway serve --engine qwen` on tiny random checkpoints, driven by the official OpenAI SDK.

All three model kinds behind one server: a clone voice (Base), a CustomVoice speaker with instructions,
and a VoiceDesign voice; every response format, streamed; SSE; seeds; the frame cap; refusals.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import decode_audio
from tests.server import start_server

FRAME = 1920  # samples per 12.5 Hz codec frame at 24 kHz
FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory, tiny_base_dir, tiny_custom_voice_dir, tiny_voice_design_dir):
    server = start_server(tmp_path_factory.mktemp("qwen_api"), "--engine", "qwen", "--qwen-base", str(tiny_base_dir),
                          "--qwen-custom-voice", str(tiny_custom_voice_dir), "--qwen-voice-design",
                          str(tiny_voice_design_dir), "--qwen-threads", "1", "--first-chunk-frames", "2",
                          "--chunk-frames", "4", env={"OMP_NUM_THREADS": "1"})
    yield server
    server.stop()


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def pcm(server, voice: str, text: str = "Hello there.", **extra) -> np.ndarray:
    response = sdk(server).audio.speech.create(model="qwen3-tts", voice=voice, input=text, response_format="pcm",
                                               extra_body={"max_new_tokens": 11, "min_new_tokens": 11, **extra})
    return decode_audio(response.content, "pcm")[0]


@pytest.mark.parametrize("voice,kind,extra", [
    ("default", "clone", {}),
    ("ryan", "speaker", {"instructions": "Speak slowly and calmly."}),
    ("narrator-design", "design", {}),
])
def test_every_model_kind_speaks(qwen_server, voice, kind, extra):
    voices = {v["id"]: v for v in httpx.get(qwen_server.v1 + "/audio/voices").json()["data"]}
    assert voices[voice]["kind"] == kind and voices[voice]["engine"] == "qwen"
    instructions = extra.pop("instructions", None)
    response = sdk(qwen_server).audio.speech.with_raw_response.create(
        model="tts-1", voice=voice, input="Hello there.", response_format="pcm",
        **({"instructions": instructions} if instructions else {}), extra_body={"max_new_tokens": 11, "min_new_tokens": 11, "seed": 3})
    assert response.headers["x-voice"] == voice
    samples = decode_audio(response.content, "pcm")[0]
    # max_new_tokens N allows N-1 frames (the official meaning); min_new_tokens refuses EOS before then
    # (an ICL clone returns one frame fewer: the official cut of the reference part, reproduced).
    assert len(samples) % FRAME == 0 and 9 * FRAME <= len(samples) <= 10 * FRAME
    assert np.isfinite(samples).all() and float(np.abs(samples).max()) > 1e-3


def test_openai_names_reach_qwen_voices(qwen_server):
    voices = httpx.get(qwen_server.v1 + "/audio/voices").json()["data"]
    aliases = {a for v in voices if v["engine"] == "qwen" for a in v.get("aliases", [])}
    assert {"alloy", "nova", "onyx", "echo", "shimmer"} <= aliases
    assert len(pcm(qwen_server, "alloy")) == 10 * FRAME  # alloy is a CustomVoice speaker here


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_streams(qwen_server, fmt):
    with sdk(qwen_server).audio.speech.with_streaming_response.create(
            model="tts-1", voice="ryan", input="Streaming test.", response_format=fmt,
            extra_body={"max_new_tokens": 17, "min_new_tokens": 17, "seed": 1}) as response:
        data = b"".join(response.iter_bytes())
    samples, rate = decode_audio(data, fmt)
    assert rate == 24000
    assert abs(len(samples) - 16 * FRAME) < 0.12 * 24000  # codec padding aside, the 16 frames are all there


def test_first_audio_leaves_before_synthesis_ends(qwen_server):
    """Frame-level streaming: the first bytes arrive long before the last frame is generated."""
    arrivals = []
    t0 = time.monotonic()
    with httpx.stream("POST", qwen_server.v1 + "/audio/speech", timeout=120, json={
            "model": "tts-1", "voice": "ryan", "input": "One sentence that streams frame by frame.",
            "response_format": "pcm", "max_new_tokens": 41, "min_new_tokens": 41}) as r:
        for piece in r.iter_bytes():
            arrivals.append((time.monotonic() - t0, len(piece)))
    total = sum(n for _, n in arrivals)
    assert total == 40 * FRAME * 2
    first_audio, last = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) >= 5 and first_audio < last / 2, arrivals[:3]


def test_sse_deltas_reassemble(qwen_server):
    with httpx.stream("POST", qwen_server.v1 + "/audio/speech", timeout=120, json={
            "model": "tts-1", "voice": "default", "input": "Events.", "response_format": "wav",
            "stream_format": "sse", "max_new_tokens": 9, "min_new_tokens": 9}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["output_tokens"] == 8  # 12.5 Hz frames
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(decode_audio(audio, "wav")[0]) == 8 * FRAME


def test_seed_makes_sampling_reproducible(qwen_server):
    a = pcm(qwen_server, "ryan", seed=42, temperature=0.9, do_sample=True)
    b = pcm(qwen_server, "ryan", seed=42, temperature=0.9, do_sample=True)
    c = pcm(qwen_server, "ryan", seed=43, temperature=0.9, do_sample=True)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_models_this_server_cannot_serve(tmp_path, tiny_base_dir):
    server = start_server(tmp_path, "--engine", "qwen", "--qwen-base", str(tiny_base_dir), "--qwen-threads", "1")
    try:
        with pytest.raises(openai.BadRequestError) as info:
            sdk(server).audio.speech.create(model="tts-1", voice="ryan", input="Hi.", response_format="pcm")
        assert info.value.body["param"] == "voice"
        assert "CustomVoice" in info.value.body["message"] and "--qwen-custom-voice" in info.value.body["message"]
        # The embedded engine stays available beside Qwen.
        r = sdk(server).audio.speech.create(model="hibari", voice="heart", input="Still speaking.",
                                            response_format="pcm")
        assert len(r.content) > 24000
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["primary"] == "qwen" and {e["name"] for e in ready["engines"]} == {"qwen", "embedded"}
    finally:
        server.stop()


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and 'engine="qwen"' in line)


def test_batch_items_share_batched_forwards(qwen_server):
    """The batch endpoint's items run at bulk priority, side by side in the model's batched frame steps."""
    rows, steps = "speech_gateway_engine_decode_rows_per_step_sum", "speech_gateway_engine_decode_rows_per_step_count"
    before = _metric(qwen_server, rows), _metric(qwen_server, steps)
    items = [{"model": "tts-1", "voice": v, "input": f"Batch item {i}.", "response_format": "wav", "seed": i,
              "max_new_tokens": 7} for i, v in enumerate(["ryan", "vivian", "aiden"])]
    r = httpx.post(qwen_server.v1 + "/audio/speech/batch", json={"items": items}, timeout=300)
    assert r.status_code == 200
    for item in r.json()["data"]:
        assert item["status"] == "ok"
        samples = decode_audio(base64.b64decode(item["audio"]), "wav")[0]
        assert 0 < len(samples) <= 6 * FRAME and len(samples) % FRAME == 0
    added_rows, added_steps = _metric(qwen_server, rows) - before[0], _metric(qwen_server, steps) - before[1]
    assert added_rows > added_steps > 0  # some steps carried more than one item
    text = httpx.get(qwen_server.url + "/metrics").text
    assert 'speech_gateway_engine_decode_rows_per_step_bucket{engine="qwen",le="1.0"}' in text
    assert _metric(qwen_server, "speech_gateway_engine_eager_steps_total") >= added_steps  # CPU: no graphs
    assert _metric(qwen_server, "speech_gateway_engine_graph_replays_total") == 0
    details = httpx.get(qwen_server.url + "/readyz").json()["engines"]
    batching = next(e for e in details if e["name"] == "qwen")["details"]["batching"]
    assert batching["max_batch"] == 8 and batching["rows"]["custom_voice"] == [{"running": 0, "waiting": 0}]


async def test_word_timestamps_without_a_recognizer_name_the_flag(qwen_server):
    """Qwen voices do not time their words and this server has no --asr-model: every door says so at once;
    the embedded voice beside it times its own words and needs none."""
    import websockets

    body = {"model": "tts-1", "voice": "ryan", "input": "Hello there.", "stream_format": "sse",
            "timestamp_granularities": ["word"]}
    r = httpx.post(qwen_server.v1 + "/audio/speech", json=body, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "timestamp_granularities" and "--asr-model" in error["message"]
    assert httpx.post(qwen_server.v1 + "/audio/speech", json={**body, "voice": "heart"}, timeout=60).status_code == 200
    async with websockets.connect(qwen_server.ws_url + "/v1/audio/speech/stream") as ws:
        await ws.send(json.dumps({"type": "session.config", "voice": "ryan", "timestamps": True}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and "--asr-model" in reply["message"]
    async with websockets.connect(qwen_server.ws_url + "/api/v1/speak") as ws:
        await ws.recv()  # ready
        await ws.send(json.dumps({"type": "start", "voice": "ryan", "timestamps": True}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and "--asr-model" in reply["message"] and reply["recoverable"]
