"""/metrics and the per-request log line, read from real servers after real requests."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.ops.logging_setup import JsonFormatter, log_event
from app.ops.metrics import GatewayMetrics
from app.settings import Settings
from engine.embedded import STREAMS_PER_INSTANCE
from tests.server import Server

SPEECH = "/v1/audio/speech"


def long_text(sentences: int) -> str:
    return " ".join(f"Sentence number {i} keeps the engine busy for a little while longer." for i in range(sentences))


def scrape(server: Server) -> list[tuple[str, dict[str, str], float]]:
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def limit_hits(server: Server, limit: str) -> float:
    """How often the protective limit `limit` fired (speech_gateway_limit_hits_total)."""
    return value(scrape(server), "speech_gateway_limit_hits_total", limit=limit)


def request_lines(server: Server) -> list[dict]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"speech_request"' in line:
            lines.append(json.loads(line))
    return lines


def speak(server: Server, text: str = "Hello there. How are you today?", **extra) -> httpx.Response:
    body = {"model": "tts-1", "voice": "alloy", "input": text, **extra}
    return httpx.post(server.url + SPEECH, json=body, timeout=60)


def test_each_app_has_its_own_registry():
    first, second = create_app(Settings()), create_app(Settings())
    assert first.state.metrics.registry is not second.state.metrics.registry
    first.state.metrics.ws_session_opened("/x")
    assert b'speech_gateway_websocket_sessions{route="/x"} 1.0' in generate_latest(first.state.metrics.registry)
    assert b'route="/x"' not in generate_latest(second.state.metrics.registry)


def test_websocket_session_api():
    metrics = GatewayMetrics()
    gauge = metrics.registry.get_sample_value
    with metrics.ws_session("/api/v1/speak"):
        assert gauge("speech_gateway_websocket_sessions", {"route": "/api/v1/speak"}) == 1
    assert gauge("speech_gateway_websocket_sessions", {"route": "/api/v1/speak"}) == 0
    assert gauge("speech_gateway_websocket_sessions_opened_total", {"route": "/api/v1/speak"}) == 1


def test_json_formatter_puts_event_fields_on_the_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.metrics.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log_event(logger, logging.INFO, {"event": "speech_request", "id": "r1", "ttfa_ms": 12.5})
    logger.warning("plain %s", "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "speech_request" and first["ttfa_ms"] == 12.5 and first["level"] == "info"
    assert second == {**second, "message": "plain text", "level": "warning", "logger": "test.metrics.json"}


def test_speech_requests_are_measured_and_logged(server_factory):
    server = server_factory("--log-format", "json", "--embedded-instances", "2")
    ok_mp3 = speak(server, response_format="mp3")
    ok_sse = speak(server, response_format="wav", stream_format="sse")
    assert ok_mp3.status_code == ok_sse.status_code == 200
    assert speak(server, speed=9).status_code == 400  # refused by validation, before the service
    assert speak(server, voice="nobody-by-this-name").status_code == 404
    assert speak(server, "\U0001f600").status_code == 400  # nothing speakable: refused by the service
    assert httpx.get(server.v1 + "/models").status_code == 200

    m = scrape(server)
    requests = "speech_gateway_requests_total"
    assert value(m, requests, route=SPEECH, status="200", format="mp3", voice_kind="builtin") == 1
    assert value(m, requests, route=SPEECH, status="200", format="wav", voice_kind="builtin") == 1
    assert value(m, requests, route=SPEECH, status="400") == 2
    assert value(m, requests, route=SPEECH, status="404", format="mp3") == 1
    assert value(m, requests, route="/v1/models", status="200") == 1
    for histogram in ("time_to_first_audio_seconds", "synthesis_seconds"):
        assert value(m, f"speech_gateway_{histogram}_count", engine="embedded", route=SPEECH) == 2
    assert value(m, "speech_gateway_real_time_factor_count", engine="embedded") == 2
    assert 0 < value(m, "speech_gateway_real_time_factor_sum") < 2  # the embedded voice is faster than real time
    assert value(m, "speech_gateway_audio_seconds_total", engine="embedded") > 2
    assert value(m, "speech_gateway_speech_outcomes_total", outcome="ok") == 2
    assert value(m, "speech_gateway_speech_outcomes_total", outcome="rejected") == 3
    assert value(m, "speech_gateway_queue_depth", engine="embedded") == 0
    assert value(m, "speech_gateway_active_slots", engine="embedded") == 0
    assert value(m, "speech_gateway_max_slots", engine="embedded") == 2 * STREAMS_PER_INSTANCE  # its default per thread
    assert value(m, "speech_gateway_engine_ready", engine="embedded") == 1
    assert value(m, "speech_gateway_model_load_seconds", engine="embedded") > 0
    assert value(m, "speech_gateway_engine_finished_total", engine="embedded") >= 2
    assert value(m, "speech_gateway_engine_steps_total", engine="embedded") >= 2

    lines = request_lines(server)
    assert sorted(line["outcome"] for line in lines) == ["ok", "ok", "rejected", "rejected", "rejected"]
    ok = {line["id"]: line for line in lines if line["outcome"] == "ok"}
    assert set(ok) == {ok_mp3.headers["x-request-id"], ok_sse.headers["x-request-id"]}
    for line in ok.values():
        assert line["route"] == SPEECH and line["voice"] == "hibari-heart" and line["status"] == 200
        assert 0 < line["ttfa_ms"] <= line["duration_ms"] and line["audio_s"] > 1
    assert {line["format"] for line in ok.values()} == {"mp3", "wav"}
    statuses = sorted(line["status"] for line in lines if line["outcome"] == "rejected")
    assert statuses == [400, 400, 404]


def test_rejections_are_counted(server_factory):
    server = server_factory("--log-format", "json", "--max-concurrent", "1", "--max-queue", "0")
    first_audio = threading.Event()
    done = threading.Event()

    def hold_the_slot() -> None:
        body = {"model": "tts-1", "voice": "alloy", "input": long_text(60), "response_format": "pcm"}
        with httpx.stream("POST", server.url + SPEECH, json=body, timeout=60) as response:
            for _ in response.iter_bytes():
                first_audio.set()
                if done.wait(0.05):
                    break  # the client leaves: a cancellation

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        assert first_audio.wait(30)
        refused = speak(server)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    finally:
        done.set()
        holder.join(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = scrape(server)
        if value(m, "speech_gateway_cancellations_total", engine="embedded") == 1:
            break
        time.sleep(0.1)
    assert value(m, "speech_gateway_rejections_total", engine="embedded") == 1
    assert value(m, "speech_gateway_requests_total", route=SPEECH, status="429") == 1
    assert value(m, "speech_gateway_cancellations_total", engine="embedded", route=SPEECH) == 1
    assert value(m, "speech_gateway_active_slots", engine="embedded") == 0
    outcomes = {(line["outcome"], line["status"]) for line in request_lines(server)}
    assert outcomes == {("rejected", 429), ("cancelled", 200)}


def test_websocket_sessions_and_utterances_are_measured(server_factory):
    from websockets.sync.client import connect

    server = server_factory("--log-format", "json")
    route = "/api/v1/speak"
    with connect(server.ws_url + route) as ws:
        ws.send(json.dumps({"type": "speak", "text": "Hello over a socket."}))
        pcm = b""
        while True:
            frame = ws.recv(timeout=30)
            if isinstance(frame, bytes):
                pcm += frame
            elif json.loads(frame)["type"] == "audio_end":
                break
        m = scrape(server)
        assert value(m, "speech_gateway_websocket_sessions", route=route) == 1
    assert len(pcm) > 4800
    deadline = time.monotonic() + 10
    while value(m := scrape(server), "speech_gateway_websocket_sessions", route=route) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value(m, "speech_gateway_websocket_sessions", route=route) == 0
    assert value(m, "speech_gateway_websocket_sessions_opened_total", route=route) == 1
    assert value(m, "speech_gateway_requests_total", route=route, status="200", voice_kind="builtin") == 1
    assert value(m, "speech_gateway_time_to_first_audio_seconds_count", engine="embedded", route=route) == 1
    [line] = request_lines(server)
    assert line["route"] == route and line["outcome"] == "ok" and abs(line["audio_s"] - len(pcm) / 48000) < 0.01
