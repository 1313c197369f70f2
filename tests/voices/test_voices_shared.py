"""Several gateway processes on one voices folder: what one does, the others see at once, without restart."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from engine.voice_store import VoiceManifest, VoiceStore, delete_voice, save_voice
from tests.server import Server, start_server
from tests.voices.test_voices_api import build_checkpoints, encode, error_of, prompt_stats, speak, speechlike, upload


def _voice(voice_id: str) -> VoiceManifest:
    return VoiceManifest(id=voice_id, name=voice_id.title(), kind="clone", ref_text="Hello there.")


def test_stores_see_each_others_writes_even_within_one_clock_tick(tmp_path: Path) -> None:
    """A folder's mtime may not move when two changes land in one timestamp tick (coarse clocks, network
    file systems). Simulated by putting the mtime back after each change: reader B must still see it."""
    writer, reader = VoiceStore([tmp_path]), VoiceStore([tmp_path])
    tone = np.sin(np.arange(24_000) / 10).astype(np.float32)
    assert reader.voices() == []
    for i in range(5):
        seen = tmp_path.stat().st_mtime_ns
        save_voice(tmp_path, _voice(f"v{i}"), tone)
        os.utime(tmp_path, ns=(seen, seen))  # the change did not move the clock
        assert [v.id for v in reader.voices()] == [f"v{j}" for j in range(i + 1)]
    seen = tmp_path.stat().st_mtime_ns
    assert delete_voice(tmp_path, "v0") and not delete_voice(tmp_path, "v0")
    os.utime(tmp_path, ns=(seen, seen))
    assert [v.id for v in reader.voices()] == ["v1", "v2", "v3", "v4"]
    assert [v.id for v in writer.voices()] == ["v1", "v2", "v3", "v4"]

    # Once the folder has been quiet for the settle time, its scan is trusted: no rescans.
    old = tmp_path.stat().st_mtime_ns - 10**10
    os.utime(tmp_path, ns=(old, old))
    reader.voices()
    (tmp_path / "v1" / "voice.json").unlink()  # an edit behind the store's back, mtime unchanged
    os.utime(tmp_path, ns=(old, old))
    assert "v1" in [v.id for v in reader.voices()]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Path]]:
    """Two Base-model gateways started side by side on one voices folder."""
    tmp = tmp_path_factory.mktemp("voices_shared")
    base = build_checkpoints(tmp / "models", "base")["base"]
    voices = tmp / "voices"
    args = ("--engine", "qwen", "--qwen-base", str(base), "--voices-dir", str(voices))
    servers: dict[str, Server] = {}
    errors: list[BaseException] = []

    def start(label: str) -> None:
        try:
            servers[label] = start_server(tmp / label, *args)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(label,)) for label in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        yield servers["a"], servers["b"], voices
    finally:
        for server in servers.values():
            server.stop()


def _ids(server: Server) -> set[str]:
    return {v["id"] for v in httpx.get(server.v1 + "/audio/voices").json()["data"]}


def test_a_voice_uploaded_through_one_process_is_served_by_the_other(pair: tuple[Server, Server, Path]) -> None:
    a, b, voices = pair
    created = upload(a, "Shared Voice", encode(speechlike(4, seed=5), "mp3"), ref_text="We share one folder.")
    assert created.status_code == 200, created.text
    assert "shared-voice" in _ids(b)  # no restart, no polling: B rescans on the folder's change
    spoken = speak(b, "Shared Voice")
    assert spoken.status_code == 200 and spoken.headers["x-voice"] == "shared-voice"
    assert prompt_stats(b)["computed"] == 1  # A had no model loaded, so B computed (and stored) the prompt

    # A reuses the prompt B stored: the disk cache is shared too.
    assert speak(a, {"id": "shared-voice"}).status_code == 200
    assert (prompt_stats(a)["computed"], prompt_stats(a)["disk_hits"]) == (0, 1)

    # The name is taken for both processes.
    clash = upload(b, "shared voice", encode(speechlike(4, seed=6), "mp3"), ref_text="Me too.")
    assert clash.status_code == 409

    deleted = httpx.delete(b.v1 + "/audio/voices/shared-voice")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert "shared-voice" not in _ids(a)
    gone = speak(a, "Shared Voice")
    assert gone.status_code == 404 and error_of(gone)["code"] == "voice_not_found"
    assert httpx.delete(a.v1 + "/audio/voices/shared-voice").status_code == 404
    assert not (voices / "shared-voice").exists() and not list((voices / ".prompt-cache").rglob("*.safetensors"))


def test_designing_without_the_voice_design_model_names_the_flag(pair: tuple[Server, Server, Path]) -> None:
    response = httpx.post(pair[0].v1 + "/audio/voices", json={"name": "Narrator Two", "description": "Calm.",
                                                               "sample_text": "Good evening."})
    assert response.status_code == 400 and error_of(response)["param"] == "description"
    message = error_of(response)["message"]
    assert "--qwen-voice-design" in message and "--qwen-base" not in message  # only what is missing
