"""The /demo/speak page in headless Chromium: a real browser WebSocket, Int16Array decoding, Web Audio playback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Server

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]
LONG_TEXT = " ".join(f"Sentence {i} of a long reading that the browser will cut short." for i in range(1, 31))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def page(embedded_server: Server) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            tab = browser.new_page()
            # Same origin as the socket, as a real frontend is served (no Local Network Access block).
            tab.goto(embedded_server.url + "/demo/speak")
            yield tab
        finally:
            browser.close()


def _counters(page) -> dict:
    return page.evaluate(
        "() => { const d = window.speakDemo; return {frames: d.framesReceived, samples: d.samplesDecoded,"
        " ends: d.audioEnds, acks: d.cancelAcks, after: d.framesAfterCancel, errors: d.errors,"
        " events: d.events.slice(), state: d.state}; }"
    )


def test_browser_receives_decodes_and_plays_speech(page) -> None:
    page.evaluate("() => window.speakDemo.speak('Hello from a real browser. The audio is decoded with Int16Array.')")
    page.wait_for_function("() => window.speakDemo.audioEnds >= 1", timeout=30_000)
    seen = _counters(page)
    assert seen["errors"] == []
    assert seen["frames"] > 0 and seen["samples"] > 24000, seen  # over a second of 24 kHz audio decoded
    assert seen["events"][:1] == ["ready"] and "audio_end" in seen["events"]
    # Web Audio really scheduled it: the AudioContext runs at 24 kHz and its clock is moving.
    rate, state = page.evaluate(
        "async () => { const c = new AudioContext({sampleRate: 24000}); await c.resume();"
        " const r = [c.sampleRate, c.state]; await c.close(); return r; }"
    )
    assert (rate, state) == (24000, "running")


def test_browser_cancel_stops_the_utterance(page) -> None:
    before = _counters(page)
    page.evaluate(f"() => window.speakDemo.speak({LONG_TEXT!r})")
    page.wait_for_function(f"() => window.speakDemo.framesReceived > {before['frames']}", timeout=30_000)
    page.evaluate("() => window.speakDemo.cancel()")
    page.wait_for_function(f"() => window.speakDemo.cancelAcks > {before['acks']}", timeout=10_000)
    page.wait_for_timeout(800)
    seen = _counters(page)
    assert seen["after"] == 0, "frames of the cancelled utterance arrived after the acknowledgement"
    assert seen["ends"] == before["ends"] + 1, "a cancelled utterance ends with one audio_end, after cancelled"
    assert seen["events"][-2:] == ["cancelled", "audio_end"], seen["events"][-4:]
    assert seen["errors"] == []

    page.evaluate("() => window.speakDemo.speak('After the cancel, speech works again.')")
    page.wait_for_function(f"() => window.speakDemo.audioEnds > {before['ends'] + 1}", timeout=30_000)
    assert _counters(page)["after"] == 0
