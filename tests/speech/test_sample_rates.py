"""`sample_rate` and the G.711 formats on POST /v1/audio/speech (OpenAI SDK, extra_body), its SSE form and the
batch: every format at every rate it takes decodes back to the 24 kHz reference of the same request (same
seed, deterministic embedded engine): same duration within about two 12.5 Hz frames, same energy in the
telephone band. Bad combinations are a 400 naming `sample_rate`."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import numpy as np
import openai
import pytest

from app.audio.encoding import OPUS_RATES, OUTPUT_RATES
from tests.audio.decode import band_energy, decode

TEXT = "Hello there, this is a telephone test."
COMPARE_RATE = 16000  # everything is compared here: it holds the 100-3400 Hz band every rate carries
FRAME = 1 / 12.5
# Codec frames and priming at low rates (AAC: 1024 samples of priming at 8 kHz is 0.128 s) come on top.
SLACK = {"aac": 0.35, "mp3": 0.2, "opus": 0.1}
COMBOS = [(fmt, rate) for fmt in ("pcm", "wav", "flac", "mp3", "aac", "ulaw", "alaw") for rate in OUTPUT_RATES] + [
    ("opus", rate) for rate in OPUS_RATES]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def speak(server, fmt: str, rate: int | None) -> openai.HttpxBinaryResponseContent:
    extra = {"seed": 7} | ({"sample_rate": rate} if rate is not None else {})
    return client(server).audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt,
                                              extra_body=extra)


@pytest.fixture(scope="module")
def reference(embedded_server) -> np.ndarray:
    """The request at the engine's own 24 kHz, as raw pcm, brought to COMPARE_RATE."""
    data = speak(embedded_server, "pcm", None).content
    samples = decode("pcm", data, COMPARE_RATE, source_rate=24000)
    assert len(samples) > COMPARE_RATE and band_energy(samples, COMPARE_RATE) > 1e-6  # speech, not silence
    return samples


def assert_matches(samples: np.ndarray, reference: np.ndarray, fmt: str, rate: int) -> None:
    seconds, expected = len(samples) / COMPARE_RATE, len(reference) / COMPARE_RATE
    assert abs(seconds - expected) <= 2 * FRAME + SLACK.get(fmt, 0.0), (fmt, rate, seconds, expected)
    n = min(len(samples), len(reference))
    ours, theirs = band_energy(samples[:n], COMPARE_RATE), band_energy(reference[:n], COMPARE_RATE)
    tolerance = 0.25 if fmt in ("mp3", "aac", "opus") else 0.1
    assert ours == pytest.approx(theirs, rel=tolerance), (fmt, rate, ours, theirs)


@pytest.mark.parametrize(("fmt", "rate"), COMBOS)
def test_every_format_at_every_rate_matches_the_reference(embedded_server, reference, fmt, rate):
    response = speak(embedded_server, fmt, rate)
    data = response.content
    if fmt in ("pcm", "ulaw", "alaw"):
        assert len(data) == pytest.approx(len(reference) * rate / COMPARE_RATE * (2 if fmt == "pcm" else 1),
                                          abs=2 * FRAME * rate * 2)
    if fmt == "wav":  # the header carries the real rate
        assert struct.unpack("<I", data[24:28])[0] == rate
        assert struct.unpack("<I", data[28:32])[0] == rate * 2
    ctype = response.response.headers["content-type"]
    if fmt in ("ulaw", "alaw"):
        base = "audio/basic" if fmt == "ulaw" else "audio/x-alaw-basic"
        assert ctype == (base if rate == 8000 else f"{base};rate={rate}")
    assert_matches(decode(fmt, data, COMPARE_RATE, source_rate=rate), reference, fmt, rate)


@pytest.mark.parametrize("fmt", ["ulaw", "alaw"])
def test_g711_defaults_to_8khz(embedded_server, reference, fmt):
    response = speak(embedded_server, fmt, None)
    assert response.response.headers["content-type"] == {"ulaw": "audio/basic", "alaw": "audio/x-alaw-basic"}[fmt]
    data = response.content
    assert len(data) == pytest.approx(len(reference) / 2, abs=2 * FRAME * 8000)  # one byte a sample at 8 kHz
    assert_matches(decode(fmt, data, COMPARE_RATE, source_rate=8000), reference, fmt, 8000)


def _sse(server, fmt: str, rate: int | None) -> tuple[bytes, dict]:
    body = {"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": fmt, "stream_format": "sse",
            "seed": 7} | ({"sample_rate": rate} if rate else {})
    with httpx.stream("POST", server.v1 + "/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    return b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), events[-1]["usage"]


def test_sse_g711_and_usage_counts_the_same_frames_at_any_rate(embedded_server, reference):
    _, usage = _sse(embedded_server, "pcm", None)
    for fmt, rate in (("ulaw", None), ("alaw", 16000), ("wav", 8000), ("opus", 12000), ("mp3", 44100)):
        data, other = _sse(embedded_server, fmt, rate)
        assert other == usage, (fmt, rate)
        assert_matches(decode(fmt, data, COMPARE_RATE, source_rate=rate or 8000), reference, fmt, rate or 8000)
    assert usage["output_tokens"] == pytest.approx(len(reference) / COMPARE_RATE * 12.5, abs=1)


BAD = [
    ({"response_format": "pcm", "sample_rate": 11025}),
    ({"response_format": "wav", "sample_rate": 32000}),
    ({"response_format": "opus", "sample_rate": 44100}),
    ({"response_format": "opus", "sample_rate": 22050}),
    ({"sample_rate": 96000}),  # mp3, the default format
    ({"response_format": "ulaw", "sample_rate": 12000}),
    ({"response_format": "alaw", "sample_rate": 0}),
    ({"response_format": "flac", "sample_rate": "fast"}),
]


@pytest.mark.parametrize("extra", BAD)
def test_bad_sample_rate_is_a_400_naming_it(embedded_server, extra):
    with pytest.raises(openai.BadRequestError) as info:
        client(embedded_server).audio.speech.create(model="tts-1", voice="alloy", input="hi", extra_body=extra)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "sample_rate" and info.value.body["message"]
    r = httpx.post(embedded_server.v1 + "/audio/speech",
                   json={"model": "tts-1", "voice": "alloy", "input": "hi", "stream_format": "sse", **extra})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert r.json()["error"]["param"] == "sample_rate"


def test_batch_g711_and_rates(embedded_server, reference):
    items = [{"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7, **extra} for extra in (
        {"response_format": "ulaw"}, {"response_format": "alaw", "sample_rate": 16000},
        {"response_format": "wav", "sample_rate": 8000}, {"response_format": "opus", "sample_rate": 44100})]
    r = httpx.post(embedded_server.v1 + "/audio/speech/batch", json={"items": items}, timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["data"]
    for result, (fmt, rate) in zip(results[:3], (("ulaw", 8000), ("alaw", 16000), ("wav", 8000)), strict=True):
        assert result["status"] == "ok" and result["format"] == fmt
        data = base64.b64decode(result["audio"])
        assert_matches(decode(fmt, data, COMPARE_RATE, source_rate=rate), reference, fmt, rate)
    assert results[3]["status"] == "error" and results[3]["error"]["param"] == "sample_rate"
