"""The web playground at `/` in headless Chromium: speak over the WebSocket and over HTTP, time to first
audio, cancel, the API key, and the voices tab against a tiny random Qwen3 server. Screenshots go to
docs/screenshots/ with UPDATE_SCREENSHOTS=1 (the README shows them). Counters come from `window.playground`."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server import ROOT, Server, start_server

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]
# The README's screenshots are refreshed with UPDATE_SCREENSHOTS=1; ordinary runs leave the tree clean.
SHOTS = ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else Path(tempfile.mkdtemp())
LONG_TEXT = " ".join(f"Sentence {i} of a long reading that the listener will cut short." for i in range(1, 31))
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


def test_playground_does_not_shadow_the_api(embedded_server: Server) -> None:
    """`/` and `/static/*` are the page; every API and ops route still answers as itself."""
    page = httpx.get(embedded_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/playground.js">' in page.text
    for asset, kind in [("playground.js", "javascript"), ("pcm-player.js", "javascript"), ("playground.css", "css")]:
        r = httpx.get(f"{embedded_server.url}/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"], asset
    for path, expected in [("/healthz", "application/json"), ("/readyz", "application/json"),
                           ("/v1/models", "application/json"), ("/v1/audio/voices", "application/json"),
                           ("/metrics", "text/plain"), ("/demo/speak", "text/html")]:
        r = httpx.get(embedded_server.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(expected), path
    missing = httpx.get(embedded_server.url + "/v1/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    assert "/" not in httpx.get(embedded_server.url + "/schema/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield instance
        instance.close()


def open_playground(browser, server: Server):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")  # same origin as the API and the socket, as a deployed page is
    page.js_errors = errors
    return page


def counters(page) -> dict:
    return page.evaluate("() => ({...window.playground})")


@needs_chromium
def test_embedded_only_server_offers_what_it_can_do(browser, embedded_server: Server) -> None:
    """The English embedded voice is offered English (and auto-detect) only, and the clone and design
    forms, which need Qwen3 models, are disabled and say which flags would enable them."""
    page = open_playground(browser, embedded_server)
    page.wait_for_function("() => window.playground.voices.length > 0 && window.playground.languages")
    page.wait_for_function("() => document.querySelector('#clone-form').dataset.available")
    assert counters(page)["languages"] == ["auto", "english"]
    for form, flag in (("clone", "--qwen-base"), ("design", "--qwen-voice-design")):
        assert page.locator(f"#{form}-form").get_attribute("data-available") == "false"
        assert page.locator(f'#{form}-form button[type="submit"]').is_disabled()
        assert flag in page.locator(f"#{form}-form .unavailable").inner_text()
    assert page.js_errors == []
    page.close()


@needs_chromium
def test_speak_over_the_websocket_shows_time_to_first_audio(browser, embedded_server: Server) -> None:
    page = open_playground(browser, embedded_server)
    page.wait_for_function("() => window.playground.voices.length > 0")
    page.fill("#text", "Hello from the playground. The audio plays while it streams over a WebSocket.")
    page.click("#speak")
    page.wait_for_function("() => window.playground.completed >= 1 || window.playground.errors.length", timeout=30_000)
    seen = counters(page)
    assert seen["errors"] == [] and seen["transport"] == "ws"
    assert seen["framesReceived"] > 0 and seen["samplesScheduled"] > 24000, seen  # over a second decoded
    assert seen["bytesReceived"] == 2 * seen["samplesScheduled"]
    assert 0 < seen["ttfaMs"] < 10_000
    assert re.fullmatch(r"\d+ ms", page.inner_text("#ttfa"))
    assert page.inner_text("#state") == "done"
    page.wait_for_timeout(300)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "playground-speak.png"), full_page=True)
    assert page.js_errors == []
    page.close()


@needs_chromium
def test_speak_over_http_in_several_formats(browser, embedded_server: Server) -> None:
    page = open_playground(browser, embedded_server)
    page.check('input[name="transport"][value="http"]')
    page.fill("#text", "Streaming over HTTP. Chunked transfer, read with fetch.")
    for done, fmt in enumerate(["pcm", "wav", "mp3", "aac", "opus"], 1):
        page.select_option("#format", fmt)
        page.click("#speak")
        page.wait_for_function(f"() => window.playground.completed >= {done} || window.playground.errors.length",
                               timeout=30_000)
        seen = counters(page)
        assert seen["errors"] == [] and seen["transport"] == "http" and seen["format"] == fmt
        assert seen["bytesReceived"] > 2000 and seen["ttfaMs"] > 0
        if fmt in ("pcm", "wav"):  # played live through Web Audio: every sample was scheduled
            assert seen["samplesScheduled"] > 24000
            assert seen["bytesReceived"] - 2 * seen["samplesScheduled"] in (0, 44)  # wav: minus its header
        else:  # compressed: the <audio> element got the whole file
            page.wait_for_function("() => Number.isFinite(document.getElementById('player').duration)")
            assert page.evaluate("() => document.getElementById('player').duration") > 1.0
        assert page.get_attribute("#download", "download") == f"speech.{'ogg' if fmt == 'opus' else fmt}"
    page.screenshot(path=str(SHOTS / "playground-http.png"), full_page=True)
    assert page.js_errors == []
    page.close()


@needs_chromium
@pytest.mark.parametrize("transport", ["ws", "http"])
def test_cancel_stops_the_audio(browser, embedded_server: Server, transport: str) -> None:
    page = open_playground(browser, embedded_server)
    page.check(f'input[name="transport"][value="{transport}"]')
    if transport == "http":
        page.select_option("#format", "pcm")
    page.fill("#text", LONG_TEXT)
    page.click("#speak")
    page.wait_for_function("() => window.playground.framesReceived > 0", timeout=30_000)
    page.click("#cancel")
    page.wait_for_function("() => window.playground.state === 'cancelled'")
    page.wait_for_timeout(200)  # what was in flight lands (and is dropped)
    stopped = counters(page)
    page.wait_for_timeout(1000)
    later = counters(page)
    assert later["bytesReceived"] == stopped["bytesReceived"], "audio kept arriving after cancel"
    assert later["framesAfterCancel"] == 0, "frames of the cancelled utterance came after the server's answer"
    assert later["completed"] == 0 and later["cancels"] == 1 and later["errors"] == []
    assert page.is_enabled("#speak") and not page.is_enabled("#cancel")
    assert stopped["samplesScheduled"] < 30 * 2 * 24000  # far less than the whole reading

    page.fill("#text", "After the cancel, speech works again.")
    page.click("#speak")
    page.wait_for_function("() => window.playground.completed >= 1 || window.playground.errors.length",
                           timeout=30_000)
    assert counters(page)["errors"] == [] and counters(page)["framesAfterCancel"] == 0
    assert page.js_errors == []
    page.close()


@needs_chromium
def test_api_key_is_asked_for_kept_and_sent(browser, keyed_server: Server) -> None:
    page = open_playground(browser, keyed_server)
    page.wait_for_function("() => document.getElementById('voices-msg').textContent.includes('API key')")
    page.click("#speak")  # no key: the socket is refused
    page.wait_for_function("() => window.playground.errors.length > 0", timeout=15_000)
    assert page.is_visible("#speak-error")

    page.fill("#api-key", keyed_server.api_key)
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("() => window.playground.voices.length > 0")
    page.reload()  # the key survives a reload (localStorage)
    assert page.input_value("#api-key") == keyed_server.api_key
    page.wait_for_function("() => window.playground.voices.length > 0")
    for done, transport in enumerate(["ws", "http"], 1):  # subprotocol, then Bearer header
        page.check(f'input[name="transport"][value="{transport}"]')
        page.click("#speak")
        page.wait_for_function(f"() => window.playground.completed >= {done} || window.playground.errors.length",
                               timeout=30_000)
        assert counters(page)["errors"] == [], transport
    page.evaluate("() => localStorage.clear()")
    page.close()


def wav_clip(seconds: float = 4.0) -> bytes:
    """A voice-like clip (harmonics in syllable-rate bursts): what the upload pipeline accepts as speech."""
    from engine.voice_store import encode_wav

    t = np.arange(int(seconds * 24000)) / 24000
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * t)) / 24000
    voiced = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8))
    bursts = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return encode_wav((voiced * bursts + noise).astype(np.float32))


def tiny_base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-TTS Base checkpoint, written once per session (the CLI tests use it too)."""
    from engine.qwen.random_model import write_random_checkpoint

    folder = tmp_path_factory.getbasetemp() / "tiny-qwen-base"
    if not (folder / ".complete").exists():
        write_random_checkpoint(folder, "base", "tiny", seed=0)
        (folder / ".complete").touch()
    return folder


def start_qwen_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Server:
    return start_server(tmp_path_factory.mktemp(name), "--engine", "qwen", "--qwen-base",
                        str(tiny_base_checkpoint(tmp_path_factory)), timeout=300)


@pytest.fixture(scope="module")
def qwen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_qwen_server(tmp_path_factory, "playground_qwen")
    yield server
    server.stop()


@needs_chromium
def test_voices_tab_uploads_previews_uses_and_deletes_a_voice(browser, qwen_server: Server, tmp_path) -> None:
    clip = tmp_path / "ada.wav"
    clip.write_bytes(wav_clip())
    page = open_playground(browser, qwen_server)
    page.click("#tab-voices")
    page.wait_for_selector('tr[data-voice="default"]')
    page.fill("#clone-name", "Ada Test")
    page.set_input_files("#clone-audio", str(clip))
    page.fill("#clone-text", "Hello, my name is Ada, and this is how I sound.")
    page.select_option("#clone-language", "english")
    page.check("#clone-consent")
    page.click('#clone-form button[type="submit"]')
    page.wait_for_function("() => window.playground.voicesCreated >= 1 || window.playground.voiceErrors.length",
                           timeout=120_000)
    seen = counters(page)
    assert seen["voiceErrors"] == [], seen["voiceErrors"]
    voice_id = seen["lastCreatedVoice"]
    assert voice_id == "ada-test"
    row = page.locator(f'tr[data-voice="{voice_id}"]')
    assert "Ada Test" in row.inner_text() and "uploaded" in row.inner_text()
    assert voice_id in page.evaluate("() => window.playground.voices")  # the picker has it too

    row.get_by_role("button", name="Preview Ada Test").click()
    page.wait_for_function("() => window.playground.previews >= 1 || window.playground.voiceErrors.length")
    assert counters(page)["lastPreviewBytes"] > 24000  # a WAV of seconds of audio
    page.screenshot(path=str(SHOTS / "playground-voices.png"), full_page=True)

    # Speak with it: a few frames are enough to prove the voice is served (random weights speak noise).
    page.click("#tab-speak")
    page.select_option("#voice", voice_id)
    page.fill("#text", "Hi.")
    page.click("#speak")
    page.wait_for_function("() => window.playground.completed >= 1 || window.playground.errors.length",
                           timeout=120_000)
    assert counters(page)["errors"] == [] and counters(page)["samplesScheduled"] > 0

    page.click("#tab-voices")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'tr[data-voice="{voice_id}"]').get_by_role("button", name="Delete Ada Test").click()
    page.wait_for_function("() => window.playground.voicesDeleted >= 1 || window.playground.voiceErrors.length")
    page.wait_for_selector(f'tr[data-voice="{voice_id}"]', state="detached")
    assert httpx.get(f"{qwen_server.v1}/audio/voices/{voice_id}").status_code == 404
    assert page.js_errors == []
    page.close()
