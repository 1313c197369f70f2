"""POST /v1/audio/transcriptions and /v1/audio/translations end to end: the OpenAI SDK, unchanged, against a
gateway running the packaged Whisper tiny.en, on speech the gateway's own embedded voice synthesized."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.asr_model import recall, tiny_en
from tests.engine.test_audio_import import BOMBS
from tests.server import Server, start_server

TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny morning in the garden."


@pytest.fixture(scope="module")
def asr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("asr"), "--asr-model", str(tiny_en()), "--asr-max-concurrent", "1",
                          "--max-queue", "0")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


@pytest.fixture(scope="module")
def client(asr_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=asr_server.v1, api_key="unused", max_retries=0)


def speak(server: Server, text: str, fmt: str = "mp3") -> bytes:
    """The gateway's own embedded voice saying `text`."""
    r = httpx.post(server.v1 + "/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text,
                                                      "response_format": fmt}, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


@pytest.fixture(scope="module")
def speech(asr_server: Server) -> bytes:
    return speak(asr_server, TEXT)


def test_every_response_format(client: openai.OpenAI, speech: bytes):
    as_json = client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1")
    assert recall(TEXT, as_json.text) >= 0.8, as_json.text
    assert as_json.usage.type == "duration" and 4 < as_json.usage.seconds < 8
    text = client.audio.transcriptions.create(file=("speech.mp3", speech), model="gpt-4o-transcribe",
                                              response_format="text")
    assert isinstance(text, str) and text.strip() == as_json.text
    srt = client.audio.transcriptions.create(file=("speech.mp3", speech), model="gpt-4o-mini-transcribe",
                                             response_format="srt")
    cues = [c.split("\n") for c in srt.strip().split("\n\n")]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", c[1]) for c in cues), srt
    assert " ".join(" ".join(c[2:]) for c in cues) == as_json.text
    vtt = client.audio.transcriptions.create(file=("speech.mp3", speech), model="gpt-4o-mini-transcribe-2025-12-15",
                                             response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n", vtt)
    verbose = client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1",
                                                 response_format="verbose_json")
    assert verbose.language == "english" and verbose.text == as_json.text
    assert verbose.duration == pytest.approx(as_json.usage.seconds, abs=0.01)
    assert verbose.segments and verbose.words is None  # segments are the default granularity
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text
    assert all(s.tokens and s.start <= s.end for s in verbose.segments)


def test_word_and_segment_granularities(client: openai.OpenAI, speech: bytes):
    words_only = client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1",
                                                    response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.segments is None and words_only.words
    words = words_only.words
    assert recall(TEXT, " ".join(w.word for w in words)) >= 0.8
    assert all(0 <= w.start < w.end <= words_only.duration + 0.05 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    both = client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1", language="en",
                                              response_format="verbose_json",
                                              timestamp_granularities=["word", "segment"])
    assert both.words and both.segments
    # With word times the segments start and end on their words.
    assert both.segments[0].start == both.words[0].start and both.segments[-1].end == both.words[-1].end


def test_streamed_deltas_add_up_to_the_done_text(client: openai.OpenAI, asr_server: Server):
    speech = speak(asr_server, "One sentence first. Then a second one follows. And here is a third.", "wav")
    events = list(client.audio.transcriptions.create(file=("speech.wav", speech), model="gpt-4o-transcribe",
                                                     stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1) and len(events) >= 2
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert recall("One sentence first. Then a second one follows. And here is a third.", events[-1].text) >= 0.8


def test_translations(client: openai.OpenAI, speech: bytes):
    translated = client.audio.translations.create(file=("speech.mp3", speech), model="whisper-1")
    assert recall(TEXT, translated.text) >= 0.8
    verbose = client.audio.translations.create(file=("speech.mp3", speech), model="whisper-1",
                                               response_format="verbose_json")
    assert verbose.language == "english" and verbose.segments and recall(TEXT, verbose.text) >= 0.8
    srt = client.audio.translations.create(file=("speech.mp3", speech), model="whisper-1", response_format="srt")
    assert srt.startswith("1\n00:00:")


@pytest.mark.parametrize("fields, param, message", [
    ({"model": "tts-1"}, "model", "unknown model"),
    ({"model": "gpt-4o-transcribe-diarize"}, "model", "diarization"),
    ({"model": "whisper-1", "language": "klingon"}, "language", "unknown language"),
    ({"model": "whisper-1", "language": "de"}, "language", "English-only"),
    ({"model": "whisper-1", "timestamp_granularities[]": "word"}, "timestamp_granularities", "verbose_json"),
    ({"model": "whisper-1", "timestamp_granularities[]": "letter", "response_format": "verbose_json"},
     "timestamp_granularities", "invalid value"),
    ({"model": "whisper-1", "stream": "true", "response_format": "srt"}, "stream", "json or text"),
    ({"model": "whisper-1", "response_format": "docx"}, "response_format", "invalid value"),
    ({"model": "whisper-1", "temperature": "1.5"}, "temperature", "invalid value"),
    ({}, "model", "model"),
])
def test_bad_fields_are_400s_naming_the_field(asr_server: Server, speech: bytes, fields: dict, param: str,
                                              message: str):
    r = httpx.post(asr_server.v1 + "/audio/transcriptions", files={"file": ("speech.mp3", speech)}, data=fields,
                   timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and message in error["message"] and error["type"] == "invalid_request_error"


def test_bad_files_are_refused_and_the_server_goes_on(asr_server: Server, client: openai.OpenAI, speech: bytes):
    url = asr_server.v1 + "/audio/transcriptions"
    for files in ({"file": ("notes.txt", b"just some text")}, {"file": ("empty.wav", b"")}, {}):
        r = httpx.post(url, files=files, data={"model": "whisper-1"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    r = httpx.post(url, files={"file": ("big.wav", b"\0" * (10 * 1024 * 1024 + 10))}, data={"model": "whisper-1"},
                   timeout=30)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file", r.text
    r = httpx.post(url, files={"file": ("bomb.flac", BOMBS["flac-10Hz"]())}, data={"model": "whisper-1"}, timeout=30)
    assert r.status_code == 400 and "Hz is outside" in r.json()["error"]["message"], r.text
    r = httpx.post(url, json={"model": "whisper-1", "file": "aGVsbG8="}, timeout=30)
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    assert recall(TEXT, client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1").text) >= 0.8


def test_transcriptions_have_their_own_slots(asr_server: Server, speech: bytes):
    """One transcription slot and no queue: a second transcription meets 429 while the first runs, and
    speech is served meanwhile (its slots are the engine's, not the recognizer's)."""
    long_speech = speak(asr_server, " ".join([TEXT] * 5), "wav")
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(httpx.post(
        asr_server.v1 + "/audio/transcriptions", files={"file": ("long.wav", long_speech)},
        data={"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities[]": "word"},
        timeout=120)))
    first.start()
    deadline = time.monotonic() + 30
    while 'speech_gateway_active_slots{engine="asr"} 1.0' not in httpx.get(asr_server.url + "/metrics").text:
        assert time.monotonic() < deadline and first.is_alive(), "the first transcription never held its slot"
        time.sleep(0.01)
    busy = httpx.post(asr_server.v1 + "/audio/transcriptions", files={"file": ("speech.mp3", speech)},
                      data={"model": "whisper-1"}, timeout=30)
    spoken = httpx.post(asr_server.v1 + "/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                               "input": "Still speaking."}, timeout=30)
    first.join(120)
    assert busy.status_code == 429 and busy.headers["retry-after"], busy.text
    assert spoken.status_code == 200 and spoken.content
    assert results[0].status_code == 200 and recall(TEXT, results[0].json()["text"]) >= 0.8


def test_metrics_count_transcriptions(asr_server: Server, client: openai.OpenAI, speech: bytes):
    def value(name: str) -> float:
        text = httpx.get(asr_server.url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (value('speech_gateway_transcriptions_total{outcome="ok",task="transcribe"}'),
              value('speech_gateway_transcribed_audio_seconds_total{task="transcribe"}'),
              value('speech_gateway_recognizer_seconds_count{task="transcribe"}'))
    client.audio.transcriptions.create(file=("speech.mp3", speech), model="whisper-1")
    after = (value('speech_gateway_transcriptions_total{outcome="ok",task="transcribe"}'),
             value('speech_gateway_transcribed_audio_seconds_total{task="transcribe"}'),
             value('speech_gateway_recognizer_seconds_count{task="transcribe"}'))
    assert after[0] == before[0] + 1 and 4 < after[1] - before[1] < 8 and after[2] == before[2] + 1


def test_without_a_recognizer_the_answer_is_503_naming_the_flag(embedded_server: Server):
    speech = speak(embedded_server, "Nobody is listening.")
    client = openai.OpenAI(base_url=embedded_server.v1, api_key="unused", max_retries=0)
    for create in (client.audio.transcriptions.create, client.audio.translations.create):
        with pytest.raises(openai.InternalServerError) as e:
            create(file=("speech.mp3", speech), model="whisper-1")
        assert e.value.status_code == 503 and "--asr-model" in e.value.body["message"]


def test_models_and_readiness_show_the_recognizer_only_when_there_is_one(asr_server: Server,
                                                                           embedded_server: Server):
    for server, listed in ((asr_server, True), (embedded_server, False)):
        client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
        ids = {m.id for m in client.models.list()}
        assert "tts-1" in ids and ("whisper-1" in ids) is listed and ("gpt-4o-transcribe" in ids) is listed
        if listed:
            assert client.models.retrieve("whisper-1").id == "whisper-1"
        ready = httpx.get(server.url + "/readyz").json()
        assert ("recognizer" in ready) is listed
    recognizer = httpx.get(asr_server.url + "/readyz").json()["recognizer"]
    assert recognizer["model"] == str(tiny_en())
    assert recognizer["device"] == "cpu" and isinstance(recognizer["loaded"], bool)


def test_the_cli_transcribes_on_a_server(asr_server: Server, speech: bytes, tmp_path):
    import subprocess
    import sys

    from tests.server import ROOT

    audio = tmp_path / "speech.mp3"
    audio.write_bytes(speech)
    out = tmp_path / "speech.vtt"
    result = subprocess.run([sys.executable, "-m", "app.cli", "transcribe", str(audio), "-o", str(out), "--server",
                             asr_server.url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("WEBVTT\n\n") and recall(TEXT, out.read_text()) >= 0.8
    result = subprocess.run([sys.executable, "-m", "app.cli", "transcribe", str(audio), "--language", "de",
                             "--server", asr_server.url], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "400" in result.stderr and "English-only" in result.stderr


def test_the_document_describes_both_routes():
    import json

    from tests.server import ROOT

    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    for path, fields in (("/v1/audio/transcriptions", {"timestamp_granularities[]", "stream", "language"}),
                         ("/v1/audio/translations", set())):
        op = doc["paths"][path]["post"]
        form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"] == ["file", "model"] and form["properties"]["file"]["format"] == "binary"
        assert fields | {"model", "prompt", "response_format", "temperature"} <= set(form["properties"])
        assert {"200", "400", "401", "413", "429", "503"} <= set(op["responses"])
        assert {"application/json", "text/plain; charset=utf-8"} <= set(op["responses"]["200"]["content"])
    assert "text/event-stream" in doc["paths"]["/v1/audio/transcriptions"]["post"]["responses"]["200"]["content"]


def test_without_faster_whisper_installed_the_gateway_still_starts_and_speaks(tmp_path):
    """--asr-model on a gateway installed without the `asr` extra: a warning at start, speech as usual, and
    transcriptions answer 503 saying what to install."""
    import subprocess
    import sys

    from tests.cli.test_cli import _WITHOUT
    from tests.server import ROOT, Server, free_port

    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _WITHOUT, "faster_whisper,ctranslate2", "serve", "--port",
                                 str(port), "--voices-dir", str(tmp_path / "voices"), "--asr-model", "small.en"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    server = Server(port, proc, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.alive() and time.monotonic() < deadline, server.log()[-3000:]
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        speech = speak(server, "Still speaking.")
        r = httpx.post(server.v1 + "/audio/transcriptions", files={"file": ("a.mp3", speech)},
                       data={"model": "whisper-1"}, timeout=30)
        assert r.status_code == 503 and "qwen-speech-gateway[asr]" in r.json()["error"]["message"], r.text
        assert "speech recognizer unavailable" in server.log() and "Traceback" not in server.log()
    finally:
        server.stop()
