"""The Chatterbox README's own client examples (tests/chatterbox/seed/), run unchanged against a live gateway."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import decode_audio
from tests.server import Server

SEED = Path(__file__).resolve().parent / "seed"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


def _pointed_at(name: str, server: Server, scheme: str) -> str:
    """The example's source with only its URL's host and port replaced."""
    source = (SEED / name).read_text()
    assert f"{scheme}://localhost:8081/" in source
    return source.replace(f"{scheme}://localhost:8081/", f"{scheme}://127.0.0.1:{server.port}/")


def test_the_python_requests_example_writes_a_wav(embedded_server: Server, tmp_path: Path) -> None:
    client = tmp_path / "client.py"
    client.write_text(_pointed_at("python_client.py", embedded_server, "http"))
    done = subprocess.run([sys.executable, str(client)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "output.wav").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:64]
    channels, rate, _, _, bits = struct.unpack("<HIIHH", data[22:36])
    assert (channels, rate, bits) == (1, 24000, 16)
    samples, _ = decode_audio(data, "wav")
    seconds = samples.size / 24000
    # "Hello, this is a test." is about a second and a half of speech, not silence.
    assert 0.8 < seconds < 6, seconds
    assert np.sqrt(np.mean(samples**2)) > 0.01
    assert abs(seconds - (len(data) - 44) / 2 / 24000) < 0.01


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_javascript_websocket_example_in_chromium(embedded_server: Server) -> None:
    from playwright.sync_api import sync_playwright

    script = _pointed_at("websocket_client.js", embedded_server, "ws")
    # Records what the example receives, without touching the example itself.
    recorder = """
        window.received = [];
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(...args) {
                super(...args);
                this.addEventListener("message", (e) => window.received.push(JSON.parse(e.data)));
            }
        };
    """
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            logged: list[str] = []
            page.on("console", lambda m: logged.append(m.text))
            page.goto(embedded_server.url + "/health")  # same origin as the socket, like a served frontend
            page.add_script_tag(content=recorder)
            page.add_script_tag(content=script)
            page.wait_for_function("() => window.received.some(m => m.type === 'done')", timeout=30_000)
            page.wait_for_timeout(100)
            received = page.evaluate("() => window.received")
            # What the example's own handler decoded: the same atob it runs, done in the page.
            lengths = page.evaluate("() => window.received.filter(m => m.type === 'chunk')"
                                    ".map(m => atob(m.data).length)")
        finally:
            browser.close()
    assert received[0]["type"] == "ready" and "standard" in received[0]["models"]
    chunks = [m for m in received if m["type"] == "chunk"]
    done = received[-1]
    assert done == {"type": "done", "id": "request-1", "duration_seconds": done["duration_seconds"]}
    assert [m["type"] for m in received] == ["ready", *["chunk"] * len(chunks), "done"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert [c["is_last"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c["id"] == "request-1" for c in chunks)
    # 40 ms of 24 kHz s16le per chunk (1920 bytes), the last one the rest.
    assert set(lengths[:-1]) == {1920} and 0 < lengths[-1] <= 1920, lengths
    seconds = sum(lengths) / 2 / 24000
    assert 0.5 < seconds < 5
    assert abs(seconds - done["duration_seconds"]) < 0.01, (seconds, done)
    assert f"Generation complete: {done['duration_seconds']}s" in logged
