"""Faults on a real server: clients that vanish, syntheses that fail mid-stream, SIGTERM with streams in flight,
a model that fails to load."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import decode_audio
from tests.ops.test_metrics import SPEECH, long_text, request_lines, scrape, value
from tests.server import Server


def _body(text: str, **extra: str) -> dict:
    return {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm", **extra}


def _wait_for(server: Server, check, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_client_disconnect_stops_the_engine(server_factory):
    server = server_factory("--log-format", "json")
    sentences = 60
    with httpx.stream("POST", server.url + SPEECH, json=_body(long_text(sentences)), timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # first audio, then the client goes away
    m = _wait_for(server, lambda s: value(s, "speech_gateway_engine_cancelled_total") == 1
                  and value(s, "speech_gateway_active_slots") == 0)
    assert value(m, "speech_gateway_cancellations_total", engine="embedded", route=SPEECH) == 1
    assert value(m, "speech_gateway_engine_cancelled_total", engine="embedded") == 1
    assert value(m, "speech_gateway_active_slots", engine="embedded") == 0
    assert value(m, "speech_gateway_engine_active_streams", engine="embedded") == 0
    steps = value(m, "speech_gateway_engine_steps_total", engine="embedded")
    assert steps < sentences / 2, "the engine went on synthesizing for a client that had left"
    time.sleep(0.5)
    assert value(scrape(server), "speech_gateway_engine_steps_total", engine="embedded") == steps
    [line] = request_lines(server)
    assert line["outcome"] == "cancelled" and line["audio_s"] > 0


def test_deadline_mid_stream_fails_that_request_only(server_factory):
    server = server_factory("--log-format", "json", "--request-timeout", "0.6")
    text = long_text(50)  # minutes of audio: cannot finish in 0.6 s, but its first sentence can
    with httpx.stream("POST", server.url + SPEECH, json=_body(text), timeout=30) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        got = len(next(chunks))
        # Another client is served while this synthesis is still running.
        short = httpx.post(server.url + SPEECH, json=_body("Still here."), timeout=30)
        assert short.status_code == 200 and len(decode_audio(short.content, "pcm")[0]) > 2400
        with pytest.raises(httpx.RemoteProtocolError):  # raw audio has no status left: the body is cut short
            for chunk in chunks:
                got += len(chunk)
    assert got > 0

    with httpx.stream("POST", server.url + SPEECH, json=_body(text, stream_format="sse"), timeout=30) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.delta"
    assert events[-1]["type"] == "speech.audio.error"
    assert events[-1]["error"]["code"] == "deadline_exceeded" and events[-1]["error"]["type"] == "server_error"

    m = _wait_for(server, lambda s: value(s, "speech_gateway_synthesis_errors_total") == 2)
    assert value(m, "speech_gateway_synthesis_errors_total", engine="embedded", code="deadline_exceeded") == 2
    assert value(m, "speech_gateway_engine_deadline_exceeded_total", engine="embedded") == 2
    assert value(m, "speech_gateway_active_slots", engine="embedded") == 0
    assert value(m, "speech_gateway_speech_outcomes_total", outcome="ok") == 1
    outcomes = sorted((line["outcome"], line.get("error")) for line in request_lines(server))
    assert outcomes == [("error", "deadline_exceeded"), ("error", "deadline_exceeded"), ("ok", None)]
    assert "synthesis failed mid-stream, body truncated" in server.log()
    assert server.alive() and httpx.get(server.url + "/readyz").status_code == 200


def _stream_across_sigterm(server: Server, text: str) -> tuple[bytes, float, float, Exception | None]:
    """Stream `text`; after the first audio SIGTERM the server. Returns body, SIGTERM time, end time, error."""
    body, error, sent_at = b"", None, 0.0
    refused = threading.Event()

    def probe_new_connections() -> None:
        while server.alive():
            try:
                httpx.get(server.url + "/healthz", timeout=1)
            except httpx.ConnectError:
                refused.set()
                return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    try:
        with httpx.stream("POST", server.url + SPEECH, json=_body(text), timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                if not body:
                    sent_at = time.monotonic()
                    server.proc.send_signal(signal.SIGTERM)
                    threading.Thread(target=probe_new_connections, daemon=True).start()
                body += chunk
    except httpx.HTTPError as e:
        error = e
    ended_at = time.monotonic()
    assert refused.wait(5), "the server still accepted connections after SIGTERM"
    return body, sent_at, ended_at, error


def test_sigterm_lets_streams_in_flight_finish(server_factory):
    server = server_factory("--log-format", "json", "--shutdown-grace", "30")
    body, sent_at, ended_at, error = _stream_across_sigterm(server, long_text(25))
    assert error is None, f"the stream was cut: {error!r}"
    audio, rate = decode_audio(body, "pcm")
    assert len(audio) / rate > 60  # the whole text (25 sentences of ~4 s), not what was ready at SIGTERM
    assert server.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    [line] = request_lines(server)
    assert line["outcome"] == "ok" and abs(line["audio_s"] - len(audio) / rate) < 0.05


def test_sigterm_cuts_streams_at_the_grace_period(server_factory):
    grace = 1.0
    server = server_factory("--log-format", "json", "--shutdown-grace", str(grace))
    body, sent_at, ended_at, error = _stream_across_sigterm(server, long_text(300)[:4096])
    assert isinstance(error, httpx.RemoteProtocolError), "expected the body to be cut short at the grace period"
    assert grace <= ended_at - sent_at < grace + 4
    assert server.proc.wait(15) in (0, -signal.SIGTERM)
    assert [line["outcome"] for line in request_lines(server)] == ["cancelled"]


def test_a_model_that_fails_to_load_leaves_the_server_up(server_factory, tmp_path):
    # A real checkpoint folder (random weights) whose weights file is then damaged: it passes the
    # start-up check and fails inside the model loader, as a truncated download would.
    from engine.qwen.random_model import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "base", "base", "tiny", seed=0)
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 64)
    server = server_factory("--engine", "qwen", "--qwen-base", str(checkpoint), "--preload", wait_ready=False)

    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
    assert "failed to load" in ready.json()["reason"]
    refused = httpx.post(server.url + SPEECH, json={"model": "tts-1", "voice": "alloy", "input": "Hello."}, timeout=30)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "engine_unavailable"
    # The embedded engine beside it still speaks, and the process is still up.
    spoken = httpx.post(server.url + SPEECH, json={**_body("Still speaking."), "model": "hibari"}, timeout=30)
    assert spoken.status_code == 200 and len(spoken.content) > 4800
    m = scrape(server)
    assert value(m, "speech_gateway_engine_ready", engine="qwen") == 0
    assert value(m, "speech_gateway_engine_ready", engine="embedded") == 1
    assert value(m, "speech_gateway_requests_total", route=SPEECH, status="503") == 1
    assert server.alive()
