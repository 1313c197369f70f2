"""The browser guard of a keyless server, on real servers: DNS rebinding (a Host name nobody allowed) is a
421 before any origin is compared, a refused origin is a 403 or a 1008 close that says which flag allows it,
and each refusal is logged once per origin (or host) per minute."""

from __future__ import annotations

import json
import logging
import re
import socket
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.ops.origins import OncePerMinute, host_name, local_host
from tests.server import Server

EVIL = "rebind.evil.example"
SPEAK = {"text": "Hi."}


def _ws_close(server: Server, path: str, host: str, origin: str | None, **kwargs) -> tuple[int, str]:
    """Open `path` as a browser on `origin` that calls the server by `host` (the TCP connection goes to the
    loopback port whatever the name): the close code and reason it gets before any message."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with connect(f"ws://{host}{path}", sock=sock, origin=origin, open_timeout=10, proxy=None, **kwargs) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory):
    from tests.server import start_server

    server = start_server(tmp_path_factory.mktemp("origins"), "--allowed-host", "speech.lan",
                          "--cors-origin", "https://speech.example.com")
    yield server
    server.stop()


def test_a_rebinding_host_is_refused_before_the_origin(keyless: Server) -> None:
    netloc = f"{EVIL}:{keyless.port}"
    rebound = {"host": netloc, "origin": f"http://{netloc}"}  # the page and the server share one name
    for path, body in (("/api/voice/default", {"voice_path": None}), ("/v1/speak", SPEAK), ("/v1/cancel", {}),
                       ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Hi."})):
        r = httpx.post(keyless.url + path, json=body, headers=rebound, timeout=30)
        assert r.status_code == 421, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "unknown_host" and f"--allowed-host {EVIL}" in error["message"], error
    # A rebinding page reads same-origin GETs too (voices, a voice's sample, metrics): refused as well.
    listing = httpx.get(keyless.v1 + "/audio/voices", timeout=10, headers={
        "host": netloc, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"})
    assert listing.status_code == 421
    for path in ("/v1/ws", "/ws/tts", "/v1/stream", "/api/v1/speak", "/v1/audio/speech/stream"):
        code, reason = _ws_close(keyless, path, netloc, f"http://{netloc}")
        assert code == 1008 and f"--allowed-host {EVIL}" in reason, (path, code, reason)


def test_local_names_ip_literals_and_allowed_hosts_keep_working(keyless: Server) -> None:
    port = keyless.port
    for netloc in (f"127.0.0.1:{port}", f"localhost:{port}", f"app.localhost:{port}", f"[::1]:{port}",
                   f"speech.lan:{port}", f"SPEECH.LAN.:{port}"):
        page = {"host": netloc, "origin": f"http://{netloc}"}
        r = httpx.post(keyless.v1 + "/speak", json=SPEAK, headers=page, timeout=30)
        assert r.status_code == 200, (netloc, r.text)
        assert httpx.get(keyless.v1 + "/audio/voices", headers={**page, "sec-fetch-site": "same-origin"},
                         timeout=10).status_code == 200
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with connect(f"ws://localhost:{port}/v1/ws", sock=sock, origin=f"http://localhost:{port}", proxy=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "CONNECTED"
    # Not a browser (no Origin, no Sec-Fetch-*): a client that reaches the server by a service name.
    r = httpx.post(keyless.v1 + "/speak", json=SPEAK, headers={"host": f"gateway:{port}"}, timeout=30)
    assert r.status_code == 200
    # A page the operator allowed, through a reverse proxy that names the server by its upstream name.
    r = httpx.post(keyless.v1 + "/speak", json=SPEAK, timeout=30, headers={
        "host": f"gateway:{port}", "origin": "https://speech.example.com"})
    assert r.status_code == 200


def test_with_api_keys_host_names_are_not_checked(keyed_server: Server) -> None:
    netloc = f"{EVIL}:{keyed_server.port}"
    r = httpx.post(keyed_server.v1 + "/speak", json=SPEAK, timeout=30, headers={
        "host": netloc, "origin": f"http://{netloc}", "authorization": f"Bearer {keyed_server.api_key}"})
    assert r.status_code == 200, r.text


def test_a_refused_origin_says_which_flag_and_is_logged_once_a_minute(server_factory) -> None:
    server = server_factory()
    page = "http://localhost:3000"  # a frontend served from its own origin (Makima's dev server)
    for _ in range(3):
        r = httpx.post(server.v1 + "/speak", json=SPEAK, headers={"origin": page}, timeout=10)
        assert r.status_code == 403 and f"--cors-origin {page}" in r.json()["error"]["message"]
        code, reason = _ws_close(server, "/api/v1/speak", f"127.0.0.1:{server.port}", page)
        assert code == 1008 and reason == f"origin not allowed: start the server with --cors-origin {page}"
    # A browser that offers subprotocols still gets the close (a handshake that picks none would hide it).
    code, _ = _ws_close(server, "/v1/ws", f"127.0.0.1:{server.port}", page, subprotocols=["auth.bearer.v1", "k"])
    assert code == 1008
    assert httpx.post(server.v1 + "/speak", json=SPEAK, headers={"origin": "http://other.example"},
                      timeout=10).status_code == 403
    deadline = time.monotonic() + 5
    while "other.example" not in server.log():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    warnings = [line for line in server.log().splitlines() if "refused a cross-origin request" in line]
    assert len(warnings) == 2, warnings
    assert "WARNING" in warnings[0] and f"--cors-origin {page}" in warnings[0]
    assert "--cors-origin http://other.example" in warnings[1] and "--api-key" in warnings[1]


# -- the pieces --------------------------------------------------------------------------------------
def test_once_per_minute_per_key_and_bounded() -> None:
    now = [0.0]
    once = OncePerMinute(max_keys=3, clock=lambda: now[0])
    assert [once("a"), once("a"), once("b")] == [True, False, True]
    now[0] = 59.9
    assert not once("a")
    now[0] = 60.0
    assert once("a")
    for key in "cdef":
        once(key)
    assert len(once._last) == 3


@pytest.mark.parametrize(("host", "local"), [
    ("localhost:8000", True), ("LOCALHOST", True), ("a.b.localhost:1", True), ("127.0.0.1:8000", True),
    ("10.1.2.3", True), ("[::1]:8000", True), ("[fe80::1]", True), ("", True), ("speech.lan:80", True),
    ("rebind.evil.example:8000", False), ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
    ("speech.lan.evil", False), ("2130706433", False),
])
def test_which_host_names_are_local(host: str, local: bool) -> None:
    assert local_host(host_name(host), frozenset({"speech.lan"})) is local


def test_log_lines_show_no_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from app.ops.origins import origin_guard

    async def app(scope, receive, send):  # noqa: ANN001, ANN202 - never reached: the request is refused
        raise AssertionError("refused requests must not reach the app")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"host", b"127.0.0.1"), (b"origin", "http://x\x1b[31m.example".encode("latin-1"))]}
    with caplog.at_level(logging.WARNING, logger="app.origins"):
        asyncio.run(origin_guard([], False)(app)(scope, None, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 403
    assert len(caplog.records) == 1 and "\x1b" not in caplog.records[0].getMessage()
    assert re.search(r"--cors-origin http://x\?\[31m\.example", caplog.records[0].getMessage())
