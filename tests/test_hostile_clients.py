"""Hostile and careless clients on a real server: readers that never read, slow senders, idle sockets,
crafted URLs, credentials in URLs. Each must cost the server a bounded amount and nobody else a slot."""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import httpx
import pytest

from tests.server import Server
from tests.test_metrics import SPEECH, long_text, scrape, value


def _hits(server: Server, limit: str) -> float:
    return value(scrape(server), "speech_gateway_limit_hits_total", limit=limit) or 0.0


def _quiet_socket(server: Server) -> socket.socket:
    """A client whose receive window is tiny and who never reads: the server's sends soon block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    return sock


def _http_request(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _ws_handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def _ws_text(message: dict) -> bytes:
    """One masked client text frame."""
    payload = json.dumps(message).encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _wait(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


# -- 2. clients that never read ---------------------------------------------------------------------
def test_clients_that_never_read_lose_their_slots(server_factory):
    server = server_factory("--max-concurrent", "3", "--max-queue", "0", "--send-timeout", "1",
                            "--ws-idle-timeout", "300", "--request-timeout", "300")
    text = long_text(40)
    stalled = []
    http = _quiet_socket(server)
    http.sendall(_http_request(SPEECH, {"model": "tts-1", "voice": "alloy", "input": text,
                                        "response_format": "pcm", "speed": 0.25}))
    stalled.append(http)
    for path, messages in (("/api/v1/speak", [{"type": "speak", "text": text}]),
                           ("/v1/audio/speech/stream", [{"type": "session.config", "speed": 0.25},
                                                        {"type": "input.text", "text": text},
                                                        {"type": "input.done"}])):
        sock = _quiet_socket(server)
        sock.sendall(_ws_handshake(path))
        reply = b""
        while b"\r\n\r\n" not in reply:  # frames sent before the 101 would be dropped by the server
            reply += sock.recv(1)
        assert reply.startswith(b"HTTP/1.1 101"), reply
        sock.sendall(b"".join(_ws_text(m) for m in messages))
        stalled.append(sock)
    # Each stalls once the socket buffers are full; 1 s without progress aborts it and frees its slot.
    assert _wait(lambda: _hits(server, "send_timeout") >= 3, 90), server.log()[-3000:]
    assert _wait(lambda: value(scrape(server), "speech_gateway_active_slots", engine="embedded") == 0, 10)
    response = httpx.post(server.url + SPEECH, json={"model": "tts-1", "voice": "alloy", "input": "Hello.",
                                                     "response_format": "pcm"}, timeout=30)
    assert response.status_code == 200 and len(response.content) > 1000
    for sock in stalled:  # each connection was aborted: what was buffered arrives, then the end
        sock.settimeout(10)
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        sock.close()
    assert server.alive()
