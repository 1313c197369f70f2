"""Word timestamps on POST /v1/audio/speech (SSE) and /v1/audio/speech/batch, embedded voice, live gateway."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import httpx
import pytest

from tests.conftest import decode_audio
from tests.server import Server
from tests.word_timestamps import (
    SENTENCE_WORDS,
    TEXT,
    WORDS,
    check_words,
    sse_batches,
    sse_events,
    words_before_next_sentence,
)

PCM_BYTES_PER_SECOND = 24000 * 2


def speech(**fields) -> dict:
    return {"model": "tts-1", "voice": "alloy", "input": TEXT, "seed": 7, **fields}


def test_sse_streams_each_sentence_words_with_the_audio(embedded_server: Server) -> None:
    events = sse_events(embedded_server.v1 + "/audio/speech", speech(
        stream_format="sse", response_format="pcm", timestamp_granularities=["word"]))
    audio = b"".join(payload for kind, payload in events if kind == "audio")
    batches = [payload for kind, payload in events if kind == "words"]
    words = check_words(batches, TEXT, WORDS, len(audio) / PCM_BYTES_PER_SECOND, SENTENCE_WORDS)
    words_before_next_sentence(sse_batches(events, PCM_BYTES_PER_SECOND))
    assert words[0]["start"] > 0.1  # the voice starts after a short silence, and the times say so
    # "$9.99" is read "nine dollars and ninety-nine cents": far longer than "paid" before it.
    money, paid = words[WORDS.index("$9.99")], words[WORDS.index("paid")]
    assert money["end"] - money["start"] > 3 * (paid["end"] - paid["start"])
    # Without timestamps: the same audio, no timestamp events.
    plain = sse_events(embedded_server.v1 + "/audio/speech", speech(stream_format="sse", response_format="pcm"))
    assert [kind for kind, _ in plain if kind == "words"] == []
    assert b"".join(payload for kind, payload in plain if kind == "audio") == audio


def test_vllm_word_timestamps_and_speed_scale_the_times(embedded_server: Server) -> None:
    """vLLM-Omni's `word_timestamps: true` asks the same; at speed 2 the audio is half as long and so are the times."""
    url = embedded_server.v1 + "/audio/speech"
    normal = sse_events(url, speech(stream_format="sse", response_format="mp3", word_timestamps=True))
    fast = sse_events(url, speech(stream_format="sse", response_format="mp3", word_timestamps=True, speed=2.0))
    for events in (normal, fast):
        samples, rate = decode_audio(b"".join(p for kind, p in events if kind == "audio"), "mp3")
        check_words([p for kind, p in events if kind == "words"], TEXT, WORDS, len(samples) / rate)
    slow_words = [w for kind, p in normal if kind == "words" for w in p]
    fast_words = [w for kind, p in fast if kind == "words" for w in p]
    for a, b in zip(slow_words, fast_words, strict=True):
        assert b["start"] == pytest.approx(a["start"] / 2, abs=0.002)
        assert (b["char_start"], b["char_end"]) == (a["char_start"], a["char_end"])


@pytest.mark.parametrize(("fields", "param"), [
    ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),
    ({"word_timestamps": True, "stream_format": "audio"}, "word_timestamps"),
    ({"timestamp_granularities": ["segment"], "stream_format": "sse"}, "timestamp_granularities[0]"),
])
def test_timestamps_refused_where_they_have_no_place(embedded_server: Server, fields: dict, param: str) -> None:
    response = httpx.post(embedded_server.v1 + "/audio/speech", json=speech(**fields), timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if param != "timestamp_granularities[0]":
        assert "stream_format" in error["message"] and "batch" in error["message"]
    assert httpx.post(embedded_server.v1 + "/audio/speech", json=speech(), timeout=30).status_code == 200


def test_batch_items_carry_their_words(embedded_server: Server) -> None:
    items = [speech(timestamp_granularities=["word"], response_format="wav"), speech(input="No words asked.")]
    response = httpx.post(embedded_server.v1 + "/audio/speech/batch", json={"items": items}, timeout=120)
    assert response.status_code == 200
    first, second = response.json()["data"]
    samples, rate = decode_audio(base64.b64decode(first["audio"]), "wav")
    check_words([first["words"]], TEXT, WORDS, len(samples) / rate)
    assert first["duration_s"] == pytest.approx(len(samples) / rate, abs=0.01)
    assert "words" not in second and second["status"] == "ok"
    archive = httpx.post(embedded_server.v1 + "/audio/speech/batch", json={"items": items[:1], "output": "zip"},
                         timeout=120)
    listing = json.loads(zipfile.ZipFile(io.BytesIO(archive.content)).read("results.json"))
    assert listing["data"][0]["words"] == first["words"]
