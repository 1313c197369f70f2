"""Hostile and careless Wyoming clients (issue 23): each costs only its own connection, never a slot for
long, never the process's memory, never a traceback; a normal HTTP client keeps being served."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, read_event
from wyoming.info import Describe, Info
from wyoming.tts import SynthesizeChunk, SynthesizeStart

from app.settings import load_settings
from app.wyoming.handler import voice_languages
from app.wyoming.server import WyomingServer
from engine.base import Voice
from tests.ops.test_metrics import SPEECH, limit_hits, long_text
from tests.server import Server, free_port, start_server, wait_until
from tests.wyoming.test_wyoming import client, read, scrape

SEND_TIMEOUT = 2.0
MAX_CONNECTIONS = 3
MiB = 1 << 20


def wyoming(tmp: Path, *args: str) -> Server:
    port = free_port()
    server = start_server(tmp, "--wyoming-port", str(port), *args)
    server.wyoming_port = port  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = wyoming(tmp_path_factory.mktemp("wyoming_limits"), "--max-concurrent", "2", "--max-queue", "0",
                     "--send-timeout", str(SEND_TIMEOUT), "--wyoming-max-connections", str(MAX_CONNECTIONS),
                     "--ws-idle-timeout", "60")
    yield server
    server.stop()


def raw(server: Server, quiet: bool = False) -> socket.socket:
    """A plain TCP client; `quiet`: a tiny receive window, so the server's writes soon block when it never reads."""
    sock = socket.socket()
    if quiet:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.wyoming_port))  # type: ignore[attr-defined]
    return sock


def frame(header: dict, data: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + data


def events_until_closed(sock: socket.socket, seconds: float) -> tuple[list[Event], bool]:
    """The events the server sends, and whether it closed the connection within `seconds`."""
    sock.settimeout(seconds)
    events: list[Event] = []
    stream = sock.makefile("rb")
    try:
        while (event := read_event(stream)) is not None:
            events.append(event)
    except TimeoutError:
        return events, False
    except ConnectionResetError:
        pass
    return events, True


def rss(server: Server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def speak_over_http(server: Server) -> int:
    return httpx.post(server.url + SPEECH, json={"model": "tts-1", "voice": "alloy", "input": "Hello.",
                                                  "response_format": "pcm"}, timeout=30).status_code


# -- connections are counted -----------------------------------------------------------------------
async def test_connections_past_the_limit_are_refused_at_once(limited: Server) -> None:
    clients = [client(limited) for _ in range(MAX_CONNECTIONS)]
    for c in clients:
        await c.connect()
        await c.write_event(Describe().event())
        assert Info.is_type((await read(c)).type)  # open, counted
    extra = raw(limited)
    started = time.monotonic()
    events, closed = events_until_closed(extra, 5)
    assert closed and time.monotonic() - started < 2
    assert [e.type for e in events] == ["error"] and "too many" in events[0].data["text"]
    assert speak_over_http(limited) == 200
    await clients[0].disconnect()
    await asyncio.sleep(0.3)  # the server sees the end of the connection
    async with client(limited) as again:  # a place came free
        await again.write_event(Describe().event())
        assert Info.is_type((await read(again)).type)
    for c in clients[1:]:
        await c.disconnect()
    assert limit_hits(limited, "wyoming_max_connections") == 1


# -- clients that never read -----------------------------------------------------------------------
def test_clients_that_never_read_free_their_slots_within_the_send_timeout(limited: Server) -> None:
    text = long_text(55)  # under 4,096 characters: minutes of audio
    assert len(text) <= 4096
    stalled = [raw(limited, quiet=True) for _ in range(2)]
    for sock in stalled:
        sock.sendall(frame({"type": "synthesize", "data_length": len(json.dumps({"text": text}))},
                           json.dumps({"text": text}).encode()))
    assert wait_until(lambda: scrape(limited, "speech_gateway_active_slots") == 2, 30)
    held_at = time.monotonic()
    assert speak_over_http(limited) == 429  # every slot is taken...
    while (status := speak_over_http(limited)) != 200:  # ...until the stalled writes time out
        assert status == 429
        assert time.monotonic() - held_at < SEND_TIMEOUT + 1 + 2, "slots still held by clients that never read"
        time.sleep(0.1)
    assert limit_hits(limited, "wyoming_send_timeout") == 2
    for sock in stalled:
        _, closed = events_until_closed(sock, 10)  # what was buffered, then the end
        assert closed
        sock.close()


# -- declared sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize("start", [
    frame({"type": "describe", "payload_length": 10 ** 12}),
    frame({"type": "describe", "payload_length": 1e12}),
    frame({"type": "synthesize", "data_length": 1 << 30}),
    frame({"type": "describe", "payload_length": "lots"}),
    b'{"type": "describe", "pad": "' + b"x" * (1 << 20),  # a header line past the cap, never ended
], ids=["payload", "float", "data", "not-a-count", "long-header"])
def test_a_length_over_the_cap_drops_the_connection_before_it_is_read(limited: Server, start: bytes) -> None:
    before = rss(limited)
    sock = raw(limited)
    sent = 0
    try:
        sock.sendall(start)
        for _ in range(32):  # what a client declaring a huge length sends next: not buffered
            sock.sendall(b"\0" * MiB)
            sent += 1
    except OSError:
        pass  # the server closed the connection
    _, closed = events_until_closed(sock, 5)
    sock.close()
    assert closed
    assert rss(limited) - before < 16 * MiB, (sent, rss(limited) - before)
    assert speak_over_http(limited) == 200
    assert "Traceback" not in limited.log()  # one line says why, nothing more


# -- streamed text -----------------------------------------------------------------------------------
async def test_streamed_text_past_the_bound_is_an_error(limited: Server) -> None:
    piece = "word " * 8000  # 40,000 characters a chunk, no sentence end: cut into ~130 segments each
    async with client(limited) as c:
        await c.write_event(SynthesizeStart().event())
        for _ in range(3):
            await c.write_event(SynthesizeChunk(text=piece).event())
        error = None
        while error is None:  # the audio is read meanwhile: this client is fast, only its text is too much
            event = await read(c)
            if Error.is_type(event.type):
                error = Error.from_event(event)
            else:
                assert AudioStart.is_type(event.type) or AudioChunk.is_type(event.type) or \
                    AudioStop.is_type(event.type), event
        assert error.code == "TooMuchTextError" and "100000" in error.text
    assert limit_hits(limited, "wyoming_text_queue") == 1
    assert wait_until(lambda: scrape(limited, "speech_gateway_active_slots") == 0, 10)


# -- malformed events ------------------------------------------------------------------------------
MALFORMED = [
    frame({"type": "synthesize", "data": {"text": 123}}),
    frame({"type": "synthesize", "data": {}}),
    frame({"type": "synthesize", "data": {"text": "Hi.", "voice": "ryan"}}),
    frame({"type": "synthesize-start", "data": {"voice": {"name": 5}}}),
    frame({"type": "synthesize-chunk", "data": {"text": ["a"]}}),
    frame({"type": 7}),
    frame({"data": {"text": "no type"}}),
    frame({"type": "describe", "data": [1, 2]}),
    frame({"type": "synthesize", "data_length": 5}, b"nope!"),
    frame({"type": "synthesize", "data_length": 6}, b"[1, 2]"),
]


async def test_malformed_events_are_errors_and_the_connection_keeps_working(limited: Server) -> None:
    async with client(limited) as c:
        assert c._writer is not None
        for raw_event in MALFORMED:
            c._writer.write(raw_event)
            event = await read(c)
            assert Error.is_type(event.type), (raw_event, event)
            assert Error.from_event(event).code == "MalformedEventError"
            await c.write_event(Describe().event())
            assert Info.is_type((await read(c)).type), raw_event
    log = limited.log()
    assert "Traceback" not in log and "never retrieved" not in log
    assert "at `$.text`" in log  # one line naming the field
    assert scrape(limited, "speech_gateway_requests_total", route="wyoming", status="500") == 0
    assert limit_hits(limited, "wyoming_malformed_event") == len(MALFORMED)


# -- the idle timer runs while a client does not read -------------------------------------------------
def test_a_client_that_does_not_read_is_idle(tmp_path: Path) -> None:
    server = wyoming(tmp_path, "--ws-idle-timeout", "1", "--send-timeout", "60")
    try:
        sock = raw(server, quiet=True)
        payload = json.dumps({"text": long_text(55)}).encode()
        sock.sendall(frame({"type": "synthesize", "data_length": len(payload)}, payload))
        assert wait_until(lambda: scrape(server, "speech_gateway_active_slots") == 1, 30)
        # Its writes stall at once; the send timeout is far, the idle timeout (1 s) is not.
        assert wait_until(lambda: scrape(server, "speech_gateway_active_slots") == 0, 6)
        assert limit_hits(server, "wyoming_idle") == 1
        _, closed = events_until_closed(sock, 10)
        assert closed
        sock.close()
    finally:
        server.stop()


# -- who may connect ---------------------------------------------------------------------------------
def test_only_allowed_addresses_may_connect(tmp_path: Path) -> None:
    server = wyoming(tmp_path, "--wyoming-allow", "192.0.2.0/24", "--wyoming-allow", "2001:db8::/32")
    try:
        for _ in range(3):
            events, closed = events_until_closed(raw(server), 5)
            assert closed and [e.type for e in events] == ["error"], events
        assert limit_hits(server, "wyoming_not_allowed") == 3
        assert server.log().count("refused a connection from 127.0.0.1") == 1  # once a minute per address
        assert speak_over_http(server) == 200
    finally:
        server.stop()
    allowed = wyoming(tmp_path / "allowed", "--wyoming-allow", "127.0.0.1")
    try:
        sock = raw(allowed)
        sock.sendall(frame({"type": "describe"}))
        assert read_event(sock.makefile("rb")).type == "info"  # type: ignore[union-attr]
        sock.close()
    finally:
        allowed.stop()


def test_wyoming_flags_are_checked_at_start() -> None:
    with pytest.raises(SystemExit, match="wyoming-allow 'home'"):
        WyomingServer(load_settings({"wyoming_port": 10300, "wyoming_allow": ["home"]}, environ={}))
    with pytest.raises(SystemExit, match="wyoming-language"):
        WyomingServer(load_settings({"wyoming_port": 10300, "wyoming_language": "auto"}, environ={}))
    server = WyomingServer(load_settings({"wyoming_port": 10300, "wyoming_language": "de-AT",
                                          "wyoming_allow": ["10.0.0.0/8", "::1"]}, environ={}))
    assert server.options.language == "de" and len(server.allow) == 2
    assert load_settings(environ={"SPEECH_GATEWAY_WYOMING_ALLOW": "10.0.0.0/8, 192.168.1.5"}).wyoming_allow == (
        "10.0.0.0/8", "192.168.1.5")


def test_a_voice_of_any_language_is_listed_under_one() -> None:
    voice = Voice(id="narrator", name="Narrator", kind="design", engine="qwen", language="auto")
    assert voice_languages(voice, "de") == ["de"]
    assert voice_languages(Voice(id="v", name="V", kind="speaker", engine="qwen", language="japanese"), "de") == ["ja"]
