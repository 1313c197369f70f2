"""POST /v1/audio/speech end to end: a real server, driven by the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import decode_audio

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
TEXT = "Hello there. This is a short test of the speech gateway."
LONG_TEXT = " ".join(f"This is sentence number {i}, spoken to test streaming." for i in range(1, 13))


def client(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def plausible(samples: np.ndarray, text: str, speed: float = 1.0) -> None:
    seconds = len(samples) / 24000
    words = len(text.split())
    # Speech runs at roughly 1.5-4 words per second; speed scales it.
    assert words / 4.5 / speed < seconds < words / 1.2 / speed + 1.0, (seconds, words)
    assert float(np.sqrt(np.mean(samples**2))) > 0.01  # not silence
    assert np.isfinite(samples).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes(embedded_server, fmt):
    response = client(embedded_server).audio.speech.create(model="tts-1", voice="alloy", input=TEXT,
                                                           response_format=fmt)
    assert response.response.headers["content-type"].startswith(
        {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
         "pcm": "audio/pcm"}[fmt])
    assert response.response.headers.get("transfer-encoding") == "chunked"
    samples, rate = decode_audio(response.content, fmt)
    assert rate == 24000
    plausible(samples, TEXT)


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_speed_changes_duration(embedded_server, speed):
    c = client(embedded_server)
    base, _ = decode_audio(c.audio.speech.create(model="tts-1", voice="nova", input=TEXT, response_format="wav",
                                                 extra_body={"seed": 1}).content, "wav")
    fast, _ = decode_audio(c.audio.speech.create(model="tts-1", voice="nova", input=TEXT, response_format="wav",
                                                 speed=speed, extra_body={"seed": 1}).content, "wav")
    assert len(fast) / len(base) == pytest.approx(1 / speed, rel=0.06)


def test_voice_object_form_and_instructions(embedded_server):
    r = httpx.post(embedded_server.v1 + "/audio/speech", json={
        "model": "gpt-4o-mini-tts", "input": "Object voice.", "voice": {"id": "heart"},
        "instructions": "Speak calmly.", "response_format": "pcm", "some_future_field": True})
    assert r.status_code == 200
    assert r.headers["x-voice"] == "hibari-heart"
    assert len(r.content) > 2400


def test_streaming_first_chunk_early(embedded_server):
    """With a dozen sentences, the first bytes arrive long before the last."""
    c = client(embedded_server)
    arrivals = []
    t0 = time.monotonic()
    with c.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=LONG_TEXT,
                                                        response_format="pcm") as response:
        data = b""
        for piece in response.iter_bytes(4800):
            arrivals.append(time.monotonic() - t0)
            data += piece
    first, last = arrivals[0], arrivals[-1]
    assert len(arrivals) > 5
    assert first < last / 3, (first, last)
    plausible(decode_audio(data, "pcm")[0], LONG_TEXT)


async def test_async_client_streaming_to_file(embedded_server, tmp_path):
    c = openai.AsyncOpenAI(base_url=embedded_server.v1, api_key="unused", max_retries=0)
    out = tmp_path / "speech.mp3"
    async with c.audio.speech.with_streaming_response.create(model="tts-1", voice="echo", input=TEXT,
                                                              response_format="mp3") as response:
        await response.stream_to_file(out)
    plausible(decode_audio(out.read_bytes(), "mp3")[0], TEXT)
    # Concurrent requests all complete.
    results = await asyncio.gather(*(c.audio.speech.create(model="tts-1", voice="alloy", input=f"Request {i}.",
                                                           response_format="pcm") for i in range(4)))
    assert all(len(r.content) > 4800 for r in results)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sse_every_format(embedded_server, fmt):
    with httpx.stream("POST", embedded_server.v1 + "/audio/speech", json={
            "model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": fmt, "stream_format": "sse",
            "speed": 1.25}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    usage = events[-1]["usage"]
    assert usage["input_tokens"] == len(TEXT)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > len(TEXT)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, _ = decode_audio(audio, fmt)
    plausible(samples, TEXT, speed=1.25)


BAD_REQUESTS = [
    ({"model": "tts-1", "input": "", "voice": "alloy"}, 400, "input", openai.BadRequestError),
    ({"model": "tts-1", "input": "x" * 4097, "voice": "alloy"}, 400, "input", openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 4.5}, 400, "speed", openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 0.1}, 400, "speed", openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "ogg"}, 400, "response_format",
     openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "stream_format": "chunks"}, 400, "stream_format",
     openai.BadRequestError),
    ({"input": "hi", "voice": "alloy"}, 400, "model", openai.BadRequestError),
    ({"model": "tts-1", "input": "hi"}, 400, "voice", openai.BadRequestError),
    ({"model": "whisper-1", "input": "hi", "voice": "alloy"}, 400, "model", openai.BadRequestError),
    ({"model": "gpt-4o-mini-tts-2025-12", "input": "hi", "voice": "alloy"}, 400, "model", openai.BadRequestError),
    ({"model": "tts-1-2025-12-15", "input": "hi", "voice": "alloy"}, 400, "model", openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "no-such-voice"}, 404, "voice", openai.NotFoundError),
    ({"model": "tts-1", "input": "hi", "voice": {"id": "no-such-voice"}}, 404, "voice", openai.NotFoundError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "language": "klingon"}, 400, "language",
     openai.BadRequestError),
    ({"model": "tts-1", "input": "hola", "voice": "alloy", "language": "es"}, 400, "language",
     openai.BadRequestError),
    ({"model": "tts-1", "input": "hi", "voice": "alloy", "instructions": "x" * 4097}, 400, "instructions",
     openai.BadRequestError),
]


@pytest.mark.parametrize("body,status,param,exc", BAD_REQUESTS)
def test_bad_input(embedded_server, body, status, param, exc):
    r = httpx.post(embedded_server.v1 + "/audio/speech", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    if not {"model", "input", "voice"} <= set(body):
        return  # the SDK itself refuses to send a request without its required arguments
    sdk_args = {k: body[k] for k in ("model", "input", "voice")}
    with pytest.raises(exc) as info:
        client(embedded_server).audio.speech.create(**sdk_args, extra_body={k: v for k, v in body.items()
                                                                            if k not in sdk_args})
    assert info.value.status_code == status
    assert info.value.body["param"] == param  # the SDK surfaces our error body


def test_malformed_json(embedded_server):
    r = httpx.post(embedded_server.v1 + "/audio/speech", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_route_and_method(embedded_server):
    r = httpx.get(embedded_server.v1 + "/audio/speech")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(embedded_server.v1 + "/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_listings_and_health(embedded_server):
    c = client(embedded_server)
    models = c.models.list()
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "hibari"} <= {m.id for m in models.data}
    voices = httpx.get(embedded_server.v1 + "/audio/voices").json()
    assert voices["object"] == "list"
    v = voices["data"][0]
    assert {"id", "name", "engine", "language"} <= set(v) and v["engine"] == "embedded"
    assert httpx.get(embedded_server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(embedded_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["engines"][0]["ready"] is True


def test_request_id_header(embedded_server):
    r = httpx.get(embedded_server.v1 + "/models", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = httpx.post(embedded_server.v1 + "/audio/speech", json={"model": "tts-1", "input": "", "voice": "x"})
    assert r.headers["x-request-id"].startswith("req_")
    response = client(embedded_server).audio.speech.create(model="tts-1", voice="alloy", input="Hi.",
                                                           response_format="pcm")
    assert response.response.headers["x-request-id"].startswith("req_")


def test_api_keys(keyed_server):
    url = keyed_server.v1 + "/audio/speech"
    body = {"model": "tts-1", "input": "Authorised.", "voice": "alloy", "response_format": "pcm"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + keyed_server.api_key}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, api_key="wrong").audio.speech.create(**body)
    assert len(client(keyed_server, api_key=keyed_server.api_key).audio.speech.create(**body).content) > 0
    assert client(keyed_server, api_key="sk-from-file-456").models.list().data  # key from the key file
    assert httpx.get(keyed_server.v1 + "/audio/voices").status_code == 401
    # Health and readiness stay open.
    assert httpx.get(keyed_server.url + "/healthz").status_code == 200
    assert httpx.get(keyed_server.url + "/readyz").status_code == 200


def _engine_workers(server) -> dict:
    engines = httpx.get(server.url + "/readyz").json()["engines"]
    return next(e for e in engines if e["name"] == "embedded")["details"]["workers"][0]


def test_full_queue_gives_429(server_factory):
    """One slot, one queue place: of four simultaneous requests one runs, one waits, two are refused."""
    server = server_factory("--max-concurrent", "1", "--max-queue", "1")
    c = client(server)
    barrier = threading.Barrier(4)
    outcomes: list = []

    def call(i: int) -> None:
        barrier.wait()
        try:
            r = c.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=LONG_TEXT * 3,
                                                        response_format="pcm")
            outcomes.append((200, len(r.content)))
        except openai.RateLimitError as e:
            outcomes.append((429, e))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    served = [n for status, n in outcomes if status == 200]
    refused = [e for status, e in outcomes if status == 429]
    assert len(served) >= 2 and len(refused) >= 1, outcomes  # the queued request was served, not refused
    assert len(set(served)) == 1 and served[0] > 24000 * 2 * 30  # every served body is the whole utterance
    for e in refused:
        assert int(e.response.headers["retry-after"]) >= 1
        assert e.body["type"] == "rate_limit_error" and e.body["code"] == "server_overloaded"


def test_disconnect_stops_engine(server_factory):
    server = server_factory("--max-concurrent", "2")
    text = " ".join(f"Sentence {i} keeps the engine busy for a while." for i in range(60))
    before = _engine_workers(server)
    with httpx.stream("POST", server.v1 + "/audio/speech", json={
            "model": "tts-1", "input": text, "voice": "alloy", "response_format": "mp3"}, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = _engine_workers(server)
        if after["cancelled"] > before["cancelled"] and after["active"] == 0:
            break
        time.sleep(0.05)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["active"] == 0
    # The engine stopped early: far fewer steps than the 60 sentences the text needs.
    assert after["steps"] - before["steps"] < 30
    # And the server still serves.
    assert client(server).audio.speech.create(model="tts-1", voice="alloy", input="Still here.",
                                              response_format="pcm").content


SDK_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")  # openai.types.audio.SpeechModel


def test_every_openai_model_id_means_the_primary_engine(embedded_server):
    """The SDK's model names, the 1106 snapshots and any dated gpt-4o-mini-tts: all accepted, all listed but the
    dated ones to come."""
    from typing import get_args

    from openai.types.audio import SpeechModel

    assert set(get_args(SpeechModel)) <= set(SDK_MODELS)  # the installed SDK names no model we do not list
    listed = {m.id for m in client(embedded_server).models.list().data}
    assert {*SDK_MODELS, "tts-1-1106", "tts-1-hd-1106"} <= listed
    for model in (*SDK_MODELS, "tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts-2026-03-01", " GPT-4o-mini-TTS "):
        response = client(embedded_server).audio.speech.with_raw_response.create(
            model=model, voice={"id": "alloy"}, input="Hi.", response_format="pcm")
        assert response.headers["x-voice"] == "hibari-heart" and len(response.content) > 0, model
    assert client(embedded_server).models.retrieve("gpt-4o-mini-tts-2026-03-01").id == "gpt-4o-mini-tts-2026-03-01"
    audio_models = httpx.get(embedded_server.v1 + "/audio/models").json()  # Open WebUI's listing
    assert audio_models["object"] == "list" and audio_models["models"] == audio_models["data"]
    assert {m["id"] for m in audio_models["models"]} == listed


def test_models_retrieve(embedded_server):
    c = client(embedded_server)
    for model in c.models.list().data:
        got = c.models.retrieve(model.id)
        assert (got.id, got.object, got.owned_by) == (model.id, "model", model.owned_by)
    with pytest.raises(openai.NotFoundError) as caught:
        c.models.retrieve("qwen3-tts")  # listed only when the Qwen engine is configured
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model" and "tts-1" in error["message"]


class _SlowFirstChunk:
    """A service whose `open` takes the request, then waits for its first chunk (or is refused after it)."""

    def __init__(self, events: list[str], refuse: bool = False):
        self.events, self.refuse = events, refuse

    async def open(self, params):
        self.events.append("engine has the request")
        await asyncio.sleep(0.01)
        self.events.append("first chunk")
        if self.refuse:
            from engine.errors import InvalidRequest

            raise InvalidRequest("nothing to say", param="input")
        return "stream"


async def test_the_encoder_is_made_while_the_first_chunk_is_synthesized(monkeypatch) -> None:
    from app.audio.encoding import make_encoder
    from app.speech import serving as speech_serving

    events: list[str] = []
    made = []

    def recording(fmt: str, output_rate: int | None = None):
        events.append("encoder")
        made.append(make_encoder(fmt, output_rate=output_rate))
        return made[-1]

    monkeypatch.setattr(speech_serving, "make_encoder", recording)
    params = speech_serving.SpeechParams(text="Hi.")
    stream, encoder = await speech_serving.open_with_encoder(_SlowFirstChunk(events), params, "mp3")
    assert (stream, encoder) == ("stream", made[0])
    assert events == ["engine has the request", "encoder", "first chunk"]

    events.clear()
    with pytest.raises(Exception, match="nothing to say"):
        await speech_serving.open_with_encoder(_SlowFirstChunk(events, refuse=True), params, "mp3")
    assert events == ["engine has the request", "encoder", "first chunk"]
    assert made[1]._closed  # a refused request leaves no codec open
