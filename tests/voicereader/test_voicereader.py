"""VoiceReader tts-engine clients against a real gateway (embedded engine): the seed's quick API check,
its streaming client (as a subprocess, header and subprotocol auth), cancel, auth, errors, warmup, busy."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import decode_audio
from tests.server import ROOT, Server, start_server

TOKEN = "dev-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENT = Path(__file__).with_name("stream_client.py")
LONG_TEXT = ("Sentence keeps the engine busy for a while. " * 100)[:4096]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The gateway started as the seed starts tts-engine: with `dev-token` as its key."""
    started = start_server(tmp_path_factory.mktemp("voicereader"), "--api-key", TOKEN)
    yield started
    started.stop()


def active_slots(server: Server) -> float:
    metrics = httpx.get(server.url + "/metrics").text
    return float(re.search(r'speech_gateway_active_slots\{engine="embedded"\} (\S+)', metrics).group(1))


async def events_until(ws, job_id: str, kinds: set[str], timeout: float = 30) -> list[dict]:
    out: list[dict] = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if event.get("job_id") == job_id:
            out.append(event)
            if event["type"] in kinds:
                return out


# -- the seed's "Quick API check", byte for byte -------------------------------------------------
def test_quick_api_check(server: Server) -> None:
    health = httpx.get(f"{server.url}/v1/health", headers={"Authorization": "Bearer dev-token"})
    assert health.status_code == 200 and health.headers["content-type"].startswith("application/json")
    runtime = health.json()["runtime"]
    assert runtime["backend"] == "embedded" and runtime["ready"] is True and runtime["fallback_active"] is False
    assert runtime["warmup"]["status"] in ("idle", "running", "ready", "failed") and isinstance(runtime["detail"], str)
    body = b'{"voice_id":"0","text":"Hello from default voice zero."}'
    speak = httpx.post(f"{server.url}/v1/speak", content=body,
                       headers={"Authorization": "Bearer dev-token", "Content-Type": "application/json"})
    assert speak.status_code == 200, speak.text
    answer = speak.json()
    assert answer["job_id"].startswith("job_") and answer["status"] in ("started", "queued")
    assert answer["ws_url"] == f"ws://127.0.0.1:{server.port}/v1/ws" and answer["voice_id"] == "0"


# -- the seed's stream_play_queue_test.py, as VoiceReader runs it ---------------------------------
def _run_client(server: Server, tmp_path: Path, *flags: str) -> tuple[str, np.ndarray]:
    wav = tmp_path / "out_stream.wav"
    done = subprocess.run([sys.executable, str(CLIENT), "--base-url", server.url, "--token", TOKEN,
                           "--save-wav-path", str(wav), *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    audio, rate = decode_audio(wav.read_bytes(), "wav")
    assert rate == 24000
    return done.stdout, audio


@pytest.mark.parametrize("auth", ["header", "subprotocol"])
def test_stream_client(server: Server, tmp_path: Path, auth: str) -> None:
    flags = ["--use-subprotocol-auth"] if auth == "subprotocol" else []
    out, audio = _run_client(server, tmp_path, "--warmup-wait", *flags)
    terminal = json.loads(re.search(r"^terminal=(.*)$", out, re.M).group(1))
    assert terminal["type"] == "JOB_DONE" and terminal["audio_chunks"] == int(re.search(r"audio_chunks=(\d+)", out)[1])
    assert "saved combined wav" in out
    # Three sentences, as the OpenAI route speaks them with the same voice: same length within 10 %.
    text = re.search(r'^TEXT = \((.*?)\)$', CLIENT.read_text(), re.M | re.S).group(1)
    text = "".join(re.findall(r'"([^"]*)"', text))
    reference = httpx.post(server.v1 + "/audio/speech", headers=AUTH, timeout=60, json={
        "model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"})
    expected = len(reference.content) / 2
    assert abs(audio.size - expected) < 0.1 * expected, (audio.size, expected)
    assert abs(terminal["audio_ms"] / 1000 - audio.size / 24000) < 0.01
    assert np.abs(audio).max() > 0.05  # speech, not silence


def test_rate_and_volume(server: Server, tmp_path: Path) -> None:
    _, normal = _run_client(server, tmp_path)
    _, fast = _run_client(server, tmp_path, "--rate", "2.0", "--volume", "0.5")
    assert abs(fast.size / normal.size - 0.5) < 0.05, (fast.size, normal.size)
    assert 0.35 < np.abs(fast).max() / np.abs(normal).max() < 0.65


# -- cancel ------------------------------------------------------------------------------------
async def test_cancel_mid_job(server: Server) -> None:
    async with websockets.connect(server.ws_url + "/v1/ws", additional_headers=AUTH, max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "CONNECTED"
        async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
            job = (await client.post(server.v1 + "/speak", json={"text": LONG_TEXT, "chunk_max_chars": 100})).json()
            job_id = job["job_id"]
            first = await events_until(ws, job_id, {"AUDIO_CHUNK"})
            assert [e["type"] for e in first] == ["JOB_STARTED", "AUDIO_CHUNK"]
            answer = (await client.post(server.v1 + "/cancel", json={"job_id": job_id})).json()
        assert answer == {"canceled": True, "job_ids": [job_id]}
        rest = await events_until(ws, job_id, {"JOB_CANCELED", "JOB_DONE", "JOB_ERROR"})
        assert rest[-1]["type"] == "JOB_CANCELED"
        chunks = [e for e in first + rest if e["type"] == "AUDIO_CHUNK"]
        assert [e["seq"] for e in chunks] == list(range(len(chunks)))
        assert rest[-1]["audio_chunks"] == len(chunks)
        assert sum(e["audio"]["duration_ms"] for e in chunks) < 200_000  # stopped well before its ~290 s end
        with pytest.raises(TimeoutError):  # nothing of that job after JOB_CANCELED
            await events_until(ws, job_id, set(), timeout=0.5)
    assert active_slots(server) == 0  # the slot is free
    again = httpx.post(server.v1 + "/cancel", headers=AUTH, json={"job_id": job_id}).json()
    assert again == {"canceled": False, "job_ids": []}


# -- no events socket --------------------------------------------------------------------------
async def test_job_without_listener_is_bounded(server: Server) -> None:
    """No socket: events are buffered up to 120 s of audio, then the job stops with NO_LISTENER (slot freed);
    the next socket gets the buffer, the terminal event last."""
    job_id = httpx.post(server.v1 + "/speak", headers=AUTH, json={"text": LONG_TEXT}).json()["job_id"]
    deadline = time.monotonic() + 30
    while httpx.get(server.v1 + "/health", headers=AUTH).json()["jobs"]["current"] is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert active_slots(server) == 0
    async with websockets.connect(server.ws_url + "/v1/ws", additional_headers=AUTH, max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "CONNECTED" and hello["replayed"] > 2
        events = await events_until(ws, job_id, {"JOB_DONE", "JOB_ERROR", "JOB_CANCELED"})
    assert events[0]["type"] == "JOB_STARTED" and events[-1]["type"] == "JOB_ERROR"
    assert events[-1]["error"]["code"] == "NO_LISTENER"
    audio_s = sum(e["audio"]["duration_ms"] for e in events if e["type"] == "AUDIO_CHUNK") / 1000
    assert 100 < audio_s <= 120
    assert httpx.get(server.v1 + "/health", headers=AUTH).json()["jobs"]["buffered_events"] == 0


# -- auth --------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}])
def test_http_refuses_missing_or_wrong_token(server: Server, headers: dict) -> None:
    for method, path, body in (("GET", "/v1/health", None), ("POST", "/v1/speak", {"text": "Hi."}),
                               ("POST", "/v1/cancel", {}), ("POST", "/v1/warmup", {}), ("GET", "/v1/voices", None)):
        r = httpx.request(method, server.url + path, headers=headers, json=body)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"] == "UNAUTHORIZED" and r.json()["message"]


@pytest.mark.parametrize("kwargs", [{}, {"additional_headers": {"Authorization": "Bearer wrong"}},
                                    {"subprotocols": ["auth.bearer.v1", "wrong"]}])
async def test_ws_refuses_missing_or_wrong_token(server: Server, kwargs: dict) -> None:
    async with websockets.connect(server.ws_url + "/v1/ws", **kwargs) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event == {"type": "ERROR", "error": {"code": "UNAUTHORIZED", "message": event["error"]["message"]}}
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1008


async def test_ws_ping_and_bad_frames(server: Server) -> None:
    async with websockets.connect(server.ws_url + "/v1/ws", subprotocols=["auth.bearer.v1", TOKEN]) as ws:
        assert ws.subprotocol == "auth.bearer.v1"
        assert json.loads(await ws.recv())["type"] == "CONNECTED"
        await ws.send("{not json")
        assert json.loads(await ws.recv())["error"]["code"] == "INVALID_REQUEST"
        await ws.send(json.dumps({"type": "PING"}))
        assert json.loads(await ws.recv()) == {"type": "PONG"}


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_a_clear_json_error(server: Server) -> None:
    cases = [
        ({"voice_id": "no-such-voice", "text": "Hello."}, 404, "VOICE_NOT_FOUND"),
        (b'{"voice_id":"0","text":', 400, "INVALID_REQUEST"),
        (b"[1, 2", 400, "INVALID_REQUEST"),
        ({"voice_id": "0"}, 400, "INVALID_REQUEST"),
        ({"text": "Hello.", "rate": 5.0}, 400, "INVALID_REQUEST"),
        ({"text": "Hello.", "settings": {"volume": -1}}, 400, "INVALID_REQUEST"),
        ({"text": "Hello.", "chunk_max_chars": 10}, 400, "INVALID_REQUEST"),
        ({"text": "...", "voice_id": "0"}, 400, "INVALID_REQUEST"),
        ({"text": "Hello.", "language": "klingon"}, 400, "INVALID_REQUEST"),
    ]
    for body, status, code in cases:
        kwargs = {"content": body, "headers": {**AUTH, "Content-Type": "application/json"}} if isinstance(
            body, bytes) else {"json": body, "headers": AUTH}
        r = httpx.post(server.v1 + "/speak", **kwargs)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert r.json()["message"]
    missing = httpx.post(server.v1 + "/cancel", headers=AUTH, json={"job_id": "job_nope"})
    assert (missing.status_code, missing.json()["code"]) == (404, "JOB_NOT_FOUND")
    # Nothing lost: the server still speaks, with a gateway voice named by its id too.
    voices = httpx.get(server.v1 + "/voices", headers=AUTH).json()["voices"]
    assert voices[0]["voice_id"] == "0" and voices[0]["default"] is True
    named = httpx.post(server.v1 + "/speak", headers=AUTH, json={"voice_id": voices[1]["voice_id"], "text": "Hi."})
    assert named.status_code == 200 and named.json()["voice_id"] == voices[1]["voice_id"]


# -- warmup and health -------------------------------------------------------------------------
def test_warmup_wait_and_health(server: Server) -> None:
    before = httpx.get(server.v1 + "/health", headers=AUTH).json()
    r = httpx.post(server.v1 + "/warmup", headers=AUTH, json={"wait": True, "force": True, "reason": "test"})
    assert r.status_code == 200
    warm = r.json()
    assert warm["accepted"] is True and warm["warmup"]["status"] == "ready"
    assert warm["warmup"]["runs"] == before["runtime"]["warmup"]["runs"] + 1
    assert warm["warmup"]["last_duration_ms"] > 0 and warm["warmup"]["last_error"] is None
    health = httpx.get(server.v1 + "/health", headers=AUTH).json()
    assert health["runtime"]["warmup"] == warm["warmup"]
    assert set(health) >= {"status", "ready", "active_model_id", "device", "ws_url", "runtime", "jobs"}
    assert health["status"] == "ok" and health["device"] == "cpu"
    assert set(health["runtime"]) >= {"backend", "ready", "fallback_active", "detail", "warmup"}
    # Not forced and already warm: nothing runs again.
    again = httpx.post(server.v1 + "/warmup", headers=AUTH, json={"wait": True}).json()
    assert again["warmup"]["runs"] == warm["warmup"]["runs"]
    metrics = httpx.get(server.url + "/metrics").text
    assert re.search(r'speech_gateway_speech_outcomes_total\{engine="embedded",outcome="ok",route="voicereader"\}',
                     metrics)


# -- busy --------------------------------------------------------------------------------------
def test_busy_server_answers_rate_limited(server_factory) -> None:
    busy = server_factory("--max-concurrent", "1", "--max-queue", "0")
    body = json.dumps({"model": "tts-1", "input": LONG_TEXT, "voice": "alloy", "response_format": "pcm",
                       "speed": 0.25}).encode()
    hog = socket.create_connection(("127.0.0.1", busy.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that stops: its slot stays taken
    hog.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
    try:
        assert hog.recv(12) == b"HTTP/1.1 200"
        deadline = time.monotonic() + 10
        while active_slots(busy) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(busy.v1 + "/speak", json={"voice_id": "0", "text": "Hello there."})
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
        assert r.json()["retry_after"] >= 1 and int(r.headers["retry-after"]) >= 1
        warm = httpx.post(busy.v1 + "/warmup", json={"wait": True})
        assert warm.status_code == 429 and warm.json()["code"] == "RATE_LIMITED"
        assert httpx.get(busy.v1 + "/health").json()["runtime"]["warmup"]["status"] == "failed"
    finally:
        hog.close()
    deadline = time.monotonic() + 10
    while active_slots(busy) > 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.post(busy.v1 + "/speak", json={"text": "Hello there."}).json()["status"] == "started"


# -- bursts and keys -----------------------------------------------------------------------------
async def test_a_burst_admits_exactly_the_queue_limit(server: Server) -> None:
    """30 speaks at once with --ws-max-queued-utterances 8: one starts, eight wait, the rest are refused
    (the limit was checked before the first job left the queue, so a burst used to overshoot it)."""
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
        answers = await asyncio.gather(*(client.post(server.v1 + "/speak", json={"text": LONG_TEXT})
                                         for _ in range(30)))
        try:
            statuses = [a.json().get("status") or a.json()["code"] for a in answers]
            assert (statuses.count("started"), statuses.count("queued"), statuses.count("RATE_LIMITED")) == (1, 8, 21)
            positions = sorted(a.json()["queue_position"] for a in answers if a.status_code == 200)
            assert positions == list(range(9))
        finally:
            assert len((await client.post(server.v1 + "/cancel", json={})).json()["job_ids"]) == 9


async def test_jobs_events_and_cancels_belong_to_their_key(server_factory) -> None:
    keyed = server_factory("--api-key", "key-one", "--api-key", "key-two")
    one, two = {"Authorization": "Bearer key-one"}, {"Authorization": "Bearer key-two"}
    async with httpx.AsyncClient(timeout=60) as client:
        # Replay: key one's job speaks while no socket listens; key two's socket gets none of it.
        first = (await client.post(keyed.v1 + "/speak", headers=one, json={"text": "Only for key one."})).json()
        deadline = time.monotonic() + 30
        while (await client.get(keyed.v1 + "/health", headers=one)).json()["jobs"]["buffered_events"] < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await client.get(keyed.v1 + "/health", headers=two)).json()["jobs"]["buffered_events"] == 0
        async with websockets.connect(keyed.ws_url + "/v1/ws", additional_headers=two, max_size=None) as ws_two:
            assert json.loads(await ws_two.recv())["replayed"] == 0
            async with websockets.connect(keyed.ws_url + "/v1/ws", subprotocols=["auth.bearer.v1", "key-one"],
                                          max_size=None) as ws_one:
                assert json.loads(await ws_one.recv())["replayed"] > 2
                replay = await events_until(ws_one, first["job_id"], {"JOB_DONE"})
                assert replay[0]["type"] == "JOB_STARTED" and replay[-1]["type"] == "JOB_DONE"
                # Live: key two can neither cancel nor see key one's running job.
                job = (await client.post(keyed.v1 + "/speak", headers=one, json={"text": LONG_TEXT})).json()
                await events_until(ws_one, job["job_id"], {"AUDIO_CHUNK"})
                assert (await client.post(keyed.v1 + "/cancel", headers=two, json={})).json() == {
                    "canceled": False, "job_ids": []}
                refused = await client.post(keyed.v1 + "/cancel", headers=two, json={"job_id": job["job_id"]})
                assert (refused.status_code, refused.json()["code"]) == (404, "JOB_NOT_FOUND")
                await ws_two.send(json.dumps({"type": "CANCEL", "job_id": job["job_id"]}))
                assert json.loads(await ws_two.recv())["error"]["code"] == "JOB_NOT_FOUND"
                assert (await client.get(keyed.v1 + "/health", headers=two)).json()["jobs"]["current"] is None
                assert (await client.get(keyed.v1 + "/health", headers=one)).json()["jobs"]["current"] == job["job_id"]
                await ws_two.send(json.dumps({"type": "CANCEL"}))  # cancels key two's jobs: none
                more = await events_until(ws_one, job["job_id"], {"AUDIO_CHUNK"})
                assert more[-1]["type"] == "AUDIO_CHUNK"  # still speaking
                answer = (await client.post(keyed.v1 + "/cancel", headers=one, json={})).json()
                assert answer == {"canceled": True, "job_ids": [job["job_id"]]}
                await events_until(ws_one, job["job_id"], {"JOB_CANCELED"})
            await ws_two.send(json.dumps({"type": "PING"}))
            assert json.loads(await ws_two.recv()) == {"type": "PONG"}  # nothing of key one's came before it


# -- fan-out cost ------------------------------------------------------------------------------
async def test_socket_compression_is_off_unless_asked(embedded_server: Server, server_factory) -> None:
    """Per-socket deflate dominated the cost of one job's events sent to many listeners, so it is opt-in."""
    compressed = server_factory("--ws-compression")
    for target, expected in ((embedded_server, None), (compressed, "permessage-deflate")):
        async with websockets.connect(target.ws_url + "/v1/ws") as ws:  # the client offers deflate by default
            assert json.loads(await ws.recv())["type"] == "CONNECTED"
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (extensions.split(";")[0] if extensions else None) == expected
