"""The Makima frontend's own `useSpeakWebSocket` hook (seed 000), bundled with React and run in Chromium.

The hook is the seed's file (tests/sockets/makima/src/hooks/useSpeakWebSocket.ts): its text only lost
its line breaks and generic type arguments in the seed document, which were put back; no logic was
touched. The harness renders one component using it, as the frontend's speak page does. Web Audio is
observed, not replaced: an init script records every buffer the hook schedules, so the test knows
what the user hears and when.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Server
from tests.sockets.test_browser_speak import CHROMIUM, FLAGS, LONG_TEXT

HARNESS = Path(__file__).resolve().parent / "makima"
ESBUILD = HARNESS / "node_modules" / ".bin" / "esbuild"
LEAD = 0.5  # --ws-speak-lead default: how far ahead of playback the gateway sends
FRAME = 0.5  # the largest binary frame, in seconds (app/sockets/audio.py MAX_FRAME_SECONDS)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")

# Records each AudioBufferSourceNode.start: when it plays (context time) and for how long.
OBSERVE_AUDIO = """
window.played = [];
window.contexts = [];
const Ctx = window.AudioContext;
window.AudioContext = class extends Ctx { constructor(o) { super(o); window.contexts.push(this); } };
const start = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (when) {
  const ctx = this.context;
  window.played.push({at: Math.max(when || 0, ctx.currentTime), seconds: this.buffer.duration,
                      rate: this.buffer.sampleRate});
  return start.apply(this, arguments);
};
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    assert ESBUILD.exists(), "run `make test`: it installs the harness (npm ci in tests/sockets/makima) first"
    out = tmp_path_factory.mktemp("makima") / "speak.js"
    subprocess.run([str(ESBUILD), str(HARNESS / "src" / "harness.ts"), "--bundle", "--format=iife", "--minify",
                    "--define:process.env.NODE_ENV=\"production\"", f"--outfile={out}", "--log-level=warning"],
                   check=True)
    return out.read_text()


@pytest.fixture(scope="module")
def page(embedded_server: Server, bundle: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    html = (f'<!doctype html><meta charset="utf-8"><div id="root"></div><script>{OBSERVE_AUDIO}</script>'
            f'<script>{bundle}</script>')
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            tab = browser.new_page()
            # Loaded into a page of the gateway's origin, as the frontend is served beside its socket
            # (a page Chromium sees as public may not open a loopback socket).
            tab.goto(embedded_server.url + "/healthz")
            tab.set_content(html)
            tab.wait_for_function("() => window.makima && window.makima.hook !== null")
            yield tab
        finally:
            browser.close()


def _status(page) -> str:
    return page.evaluate("() => window.makima.hook.status")


def _heard(page) -> list[dict]:
    return page.evaluate("() => window.played.slice()")


def test_hook_speaks_every_sample_at_24khz(page) -> None:
    page.evaluate("() => window.makima.hook.speak('Hello from the Makima frontend. Every sample is played.')")
    page.wait_for_function("() => window.makima.statuses.includes('speaking')", timeout=30_000)
    page.wait_for_function("() => window.makima.hook.status === 'connected'", timeout=30_000)
    heard = _heard(page)
    assert heard and {h["rate"] for h in heard} == {24000}
    seconds = sum(h["seconds"] for h in heard)
    assert seconds > 1.5, seconds
    # Played back to back: each buffer starts where the one before ended (no overlap, no gap to speak of).
    for before, after in zip(heard, heard[1:], strict=False):
        assert after["at"] >= before["at"] + before["seconds"] - 1e-3
    assert page.evaluate("() => window.makima.hook.error") is None


@pytest.mark.parametrize("listen_ms", [100, 300, 1500])
def test_hook_cancel_stops_speech_within_the_pacing_window(page, listen_ms: int) -> None:
    """Cancel clicked while the burst of a long text is still arriving (100, 300 ms after the first
    audio) or later. Without pacing, frames already on the wire at the click are queued by the hook
    after it cleared its queue and play on (seconds of audio, status stuck at speaking)."""
    played_before = len(_heard(page))
    page.evaluate(f"() => window.makima.hook.speak({LONG_TEXT!r})")
    page.wait_for_function("() => window.makima.hook.status === 'speaking'", timeout=30_000)
    page.wait_for_timeout(listen_ms)  # the user listens a while, then clicks Cancel
    cancelled_at = page.evaluate("() => { const t = window.contexts.at(-1).currentTime;"
                                 " window.makima.hook.cancel(); return t; }")
    page.wait_for_timeout(2500)
    heard = _heard(page)[played_before:]
    after = sum(max(0.0, h["at"] + h["seconds"] - max(h["at"], cancelled_at)) for h in heard)
    # What still plays: the rest of the buffer playing at the click (the hook lets it finish) and
    # frames the gateway had already sent, which its pacing keeps within LEAD of playback.
    assert after <= FRAME + LEAD, f"{after:.2f} s of the cancelled utterance played on"
    assert sum(h["seconds"] for h in heard) < 20  # the long text (about a minute) was not all sent
    # Frames in flight at the click set the hook back to speaking; audio_end (sent after cancelled)
    # is its only way back to connected.
    assert _status(page) == "connected", page.evaluate("() => window.makima.statuses")

    page.evaluate("() => window.makima.hook.speak('After the cancel, speech works again.')")
    page.wait_for_function("() => window.makima.hook.status === 'speaking'", timeout=30_000)
    page.wait_for_function("() => window.makima.hook.status === 'connected'", timeout=30_000)
    assert len(_heard(page)) > played_before + len(heard)
