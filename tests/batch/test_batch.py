"""POST /v1/audio/speech/batch: per-item results, zip and json, bulk priority behind interactive requests."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zipfile

import httpx

from tests.conftest import decode_audio


def test_batch_json_with_a_failing_item(embedded_server):
    items = [
        {"model": "tts-1", "input": "First line of the batch.", "voice": "alloy", "response_format": "wav"},
        {"model": "tts-1", "input": "Second line.", "voice": "no-such-voice"},
        {"model": "tts-1", "input": "Third line, faster.", "voice": "nova", "response_format": "mp3", "speed": 1.5},
    ]
    r = httpx.post(embedded_server.v1 + "/audio/speech/batch", json={"items": items}, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert [d["status"] for d in data] == ["ok", "error", "ok"]
    assert data[1]["error"]["param"] == "voice" and data[1]["error"]["code"] == "voice_not_found"
    for d in (data[0], data[2]):
        samples, _ = decode_audio(base64.b64decode(d["audio"]), d["format"])
        assert abs(len(samples) / 24000 - d["duration_s"]) < 0.2


def test_batch_zip(embedded_server):
    items = [{"model": "tts-1", "input": f"Zip line {i}.", "voice": "alloy", "response_format": "flac"}
             for i in range(3)]
    r = httpx.post(embedded_server.v1 + "/audio/speech/batch", json={"items": items, "output": "zip"}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(archive.namelist()) == ["000.flac", "001.flac", "002.flac", "results.json"]
    listing = json.loads(archive.read("results.json"))["data"]
    assert all(item["status"] == "ok" for item in listing)
    samples, _ = decode_audio(archive.read("001.flac"), "flac")
    assert len(samples) > 24000 * 0.5


def test_batch_validation(embedded_server):
    url = embedded_server.v1 + "/audio/speech/batch"
    item = {"model": "tts-1", "input": "x", "voice": "alloy"}
    for body in ({"items": []}, {"items": [item] * 65}, {"items": [{**item, "speed": 9}]}, {}):
        r = httpx.post(url, json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_interactive_overtakes_a_running_batch(server_factory):
    """One slot: an interactive request made mid-batch is served before the batch's remaining items."""
    server = server_factory("--max-concurrent", "1")
    text = " ".join(f"Batch sentence {i} takes a little while to say." for i in range(12))
    items = [{"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"} for _ in range(6)]
    finished: dict[str, float] = {}

    def run_batch() -> None:
        r = httpx.post(server.v1 + "/audio/speech/batch", json={"items": items}, timeout=300)
        assert r.status_code == 200
        finished["batch"] = time.monotonic()

    t = threading.Thread(target=run_batch)
    t.start()
    time.sleep(0.5)  # the batch is under way
    r = httpx.post(server.v1 + "/audio/speech", json={"model": "tts-1", "input": "Interactive request.",
                                                      "voice": "alloy", "response_format": "pcm"}, timeout=300)
    finished["interactive"] = time.monotonic()
    assert r.status_code == 200 and len(r.content) > 0
    t.join(300)
    assert finished["interactive"] < finished["batch"]
