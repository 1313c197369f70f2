"""Crashes never leave half a voice (or half a consent recording): SIGKILL mid-upload, mid-save and
mid-delete, then a clean restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.voice_store import MANIFEST, REFERENCE, VoiceManifest, read_reference
from engine.work_folders import clean_stale_entries, work_prefix
from tests.server import ROOT, Server
from tests.voices.test_voices_api import build_checkpoints, encode, hidden_entries, speechlike

# Runs in a child process that kills itself at the worst moment of a save or a delete.
CRASH = """
import os, shutil, signal, sys
import numpy as np
from pathlib import Path
from engine.consent_store import ConsentStore
from engine.quota import reserve
from engine.voice_store import VoiceManifest, count_voices, delete_voice, save_voice

voices, mode = sys.argv[1], sys.argv[2]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
tone = (0.3 * np.sin(np.arange(4 * 24000) / 7)).astype(np.float32)
real_replace = os.replace
if mode == "save":  # every file written and fsynced; killed just before the rename that publishes it
    reserve(Path(voices), 10, count_voices)  # and a place under --max-voices held: never given back
    os.replace = lambda src, dst: die() if ".tmp-" in str(src) else real_replace(src, dst)
    save_voice(voices, VoiceManifest(id="half-voice", name="Half", kind="clone", ref_text="Hi."), tone)
elif mode == "consent":  # a consent recording, killed likewise just before it is published
    os.replace = lambda src, dst: die() if ".tmp-" in str(src) else real_replace(src, dst)
    ConsentStore(Path(voices) / "consents").create("Half", "en", tone)
else:  # renamed out of sight; killed before its files are removed
    save_voice(voices, VoiceManifest(id="doomed", name="Doomed", kind="clone", ref_text="Hi."), tone)
    shutil.rmtree = die
    delete_voice(voices, "doomed")
"""


def _crash_in(voices: Path, mode: str) -> None:
    done = subprocess.run([sys.executable, "-c", CRASH, str(voices), mode], cwd=ROOT, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_cleanup_removes_only_what_dead_writers_left(tmp_path: Path) -> None:
    host = work_prefix("tmp", "x").split("-")[2]  # this host's tag, as save_voice writes it
    dead, alive, me = _dead_pid(), os.getppid(), os.getpid()
    names = {
        f".tmp-{dead}-{host}-a-xyz": False,  # a crashed save on this host
        f".del-{dead}-{host}-b-1": False,  # a crashed delete
        f".tmp-{me}-{host}-c-xyz": False,  # a previous life of this very pid (containers restart as pid 1)
        f".tmp-{alive}-{host}-d-xyz": True,  # another live process on this host is still writing
        ".tmp-123-0badf00d-e-xyz": True,  # another host: unknowable, young, kept
        ".old-123-0badf00d-f-1": False,  # another host, but hours old
        ".tmp-g-legacy": True,  # no owner in the name, young
        ".prompt-cache": True,
        "alice": True,
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "voice.json").write_text("{}")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / ".old-123-0badf00d-f-1", (old, old))
    removed = {p.name for p in clean_stale_entries(tmp_path)}
    assert removed == {n for n, keep in names.items() if not keep}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, keep in names.items() if keep}


def _multipart(name: str, clip: bytes, ref_text: str) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/v1/audio/voices", data={"name": name, "ref_text": ref_text},
                            files={"audio_sample": ("voice.wav", clip, "audio/wav")})
    return request.read(), request.headers["content-type"]


def _send(server: Server, body: bytes, content_type: str, *, upto: int, chunk: int = 32 * 1024,
          pause: float = 0.0) -> socket.socket:
    """Send the request head and the first `upto` bytes of the body (slowly, with `pause`), keep the socket."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST /v1/audio/voices HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    for start in range(0, upto, chunk):
        sock.sendall(body[start:min(start + chunk, upto)])
        time.sleep(pause)
    return sock


def _kill(server: Server) -> None:
    server.proc.kill()
    server.proc.wait(10)


def _listed(server: Server) -> set[str]:
    return {v["id"] for v in httpx.get(server.v1 + "/audio/voices").json()["data"]}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoints(tmp_path_factory.mktemp("crash_models"), "base")["base"]


def test_sigkill_mid_upload_mid_save_and_mid_delete_leave_no_trace(tmp_path: Path, base_model: Path,
                                                                   server_factory) -> None:
    voices = tmp_path / "voices"
    args = ("--engine", "qwen", "--qwen-base", str(base_model), "--voices-dir", str(voices))
    clip = encode(speechlike(28, seed=2), "wav")  # 1.3 MB: a body that takes a while to send slowly
    mid_body, content_type = _multipart("Crash Mid Body", clip, "Twenty eight seconds of me.")
    after_body, after_type = _multipart("Crash After Body", clip, "Twenty eight seconds of me.")

    # 1. One gateway, one SIGKILL, two uploads caught by it: one still arriving (sent in slow chunks,
    # stopped halfway), one sent whole just before (being parsed, decoded or saved when the kill lands).
    server = server_factory(*args)
    slow = _send(server, mid_body, content_type, upto=len(mid_body) // 2, pause=0.02)
    whole = _send(server, after_body, after_type, upto=len(after_body))
    time.sleep(0.05)
    _kill(server)
    slow.close()
    whole.close()

    # 2. Other writers killed mid-save (just before the publishing rename) and mid-delete (after it).
    _crash_in(voices, "save")
    _crash_in(voices, "delete")
    _crash_in(voices, "consent")
    left = hidden_entries(voices)
    # The crashes did leave debris (the gateway's own kill may add a .tmp of its own when it landed mid-save,
    # as the places it held under --max-voices are left).
    assert {n.split("-")[0] for n in left} == {".del", ".tmp", ".place"}, left
    assert [p.name.split("-")[0] for p in (voices / "consents").iterdir()] == [".tmp"]

    # 3. The restart cleans the debris; nothing half-made is visible, the deleted voice stays deleted.
    server = server_factory(*args)
    assert hidden_entries(voices) == []
    listed = _listed(server)
    assert not {"crash-mid-body", "half-voice", "doomed"} & (listed | {p.name for p in voices.iterdir()})
    folder = voices / "crash-after-body"
    saved = folder.exists()
    if saved:  # the kill came after the rename: then the voice is whole and listed
        assert sorted(p.name for p in folder.iterdir()) == [REFERENCE, MANIFEST]
        assert json.loads((folder / MANIFEST).read_text())["name"] == "Crash After Body"
        assert 27 < len(read_reference(folder / REFERENCE)[0]) / 24_000 < 29
        assert "crash-after-body" in listed
    else:
        assert "crash-after-body" not in listed
    # Whatever happened, the name works normally now.
    retry = httpx.post(server.v1 + "/audio/voices", content=after_body, headers={"content-type": after_type},
                       timeout=120)
    assert retry.status_code == (409 if saved else 200), retry.text
    assert VoiceManifest(**json.loads((folder / MANIFEST).read_text())).ref_text == "Twenty eight seconds of me."
