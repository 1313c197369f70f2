"""Long work on the command line: resumable books, a folder of clips, synthesis on a server, voices.

Every run is a real `speech-gateway` process; interruptions use `--max-segments N`, which stops the
run after N new segments exactly where a kill would (segments are kept only once complete).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import decode_audio
from tests.ops.test_playground_browser import start_qwen_server, wav_clip
from tests.server import ROOT, Server

PARTIAL_EXIT = 3
BOOK = [f"Line {i} of the book." for i in range(1, 41)]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def part_stats(parts: Path) -> dict[str, tuple[int, int]]:
    """name → (inode, mtime_ns): a rewritten part gets a new inode (it is renamed into place)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts.glob("*.pcm")}


def served_speech(server: Server) -> float:
    """Syntheses the server finished on POST /v1/audio/speech (from /metrics)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    pattern = r'speech_gateway_speech_outcomes_total\{engine="embedded",outcome="ok",route="/v1/audio/speech"\} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_book_resumes_without_redoing_finished_segments(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("\n".join(BOOK))
    out = tmp_path / "book.wav"
    parts, state = tmp_path / "book.wav.parts", tmp_path / "book.wav.state.json"

    first = cli("say", "--file", str(book), "-o", str(out), "--resume", "--max-segments", "15")
    assert first.returncode == PARTIAL_EXIT, first.stderr
    assert "15/40 segments" in first.stderr and "--resume" in first.stderr
    assert not out.exists(), "an unfinished run must not leave something that looks like the output"
    assert len(json.loads(state.read_text())["segments"]) == 15
    done_first = part_stats(parts)
    assert len(done_first) == 15

    second = cli("say", "--file", str(book), "-o", str(out), "--resume", "--max-segments", "10")
    assert second.returncode == PARTIAL_EXIT, second.stderr
    assert "15 already done" in second.stderr
    done_second = part_stats(parts)
    assert len(done_second) == 25
    assert {k: done_second[k] for k in done_first} == done_first, "finished segments were synthesized again"
    recorded = json.loads(state.read_text())["segments"]

    last = cli("say", "--file", str(book), "-o", str(out), "--resume")
    assert last.returncode == 0, last.stderr
    assert "40/40 segments" in last.stderr and "25 already done" in last.stderr
    assert not parts.exists() and not state.exists(), "a finished run leaves only the output"

    samples, _ = decode_audio(out.read_bytes(), "wav")
    assert int.from_bytes(out.read_bytes()[40:44], "little") == 2 * len(samples), "WAV sizes are the real ones"
    # The assembled file is every segment, in order, once: the parts kept by the first two runs are its start.
    kept = sum(recorded[str(i)]["samples"] for i in range(1, 26))
    assert len(samples) > kept + 15 * 24000 * 0.8
    straight = tmp_path / "straight.wav"
    assert cli("say", "--file", str(book), "-o", str(straight)).returncode == 0
    reference, _ = decode_audio(straight.read_bytes(), "wav")
    assert abs(len(samples) - len(reference)) <= 0.01 * len(reference)


def test_folder_of_clips_one_per_line(tmp_path):
    script = tmp_path / "script.txt"
    lines = ["Welcome to the show.", "", "Today we talk about speech.", "Thanks for listening!"]
    script.write_text("\n".join(lines))
    clips = tmp_path / "clips"
    result = cli("say", "--file", str(script), "-o", f"{clips}/")
    assert result.returncode == 0, result.stderr
    assert "3/3 files" in result.stderr
    files = sorted(p.name for p in clips.iterdir() if not p.name.startswith("."))
    assert files == ["0001.mp3", "0002.mp3", "0003.mp3"]  # blank lines are skipped, numbering stays dense
    durations = {n: len(decode_audio((clips / n).read_bytes(), "mp3")[0]) / 24000 for n in files}
    assert all(0.5 < d < 6 for d in durations.values()), durations
    before = {n: (clips / n).stat().st_mtime_ns for n in files}

    # Edit one line: a resumed run redoes exactly that clip and skips the others.
    lines[2] = "Today we talk about streaming speech."
    script.write_text("\n".join(lines))
    again = cli("say", "--file", str(script), "--split-lines", str(clips), "--resume")
    assert again.returncode == 0, again.stderr
    assert "2 already done" in again.stderr
    after = {n: (clips / n).stat().st_mtime_ns for n in files}
    assert [n for n in files if after[n] != before[n]] == ["0002.mp3"]


def test_say_through_a_running_server_resumes(tmp_path, embedded_server):
    book = tmp_path / "book.txt"
    book.write_text("\n".join(BOOK[:12]))
    out = tmp_path / "book.flac"
    base = served_speech(embedded_server)

    partial = cli("say", "--file", str(book), "-o", str(out), "--server", embedded_server.url, "--resume",
                  "--max-segments", "5")
    assert partial.returncode == PARTIAL_EXIT, partial.stderr
    assert served_speech(embedded_server) - base == 5

    done = cli("say", "--file", str(book), "-o", str(out), "--server", embedded_server.url, "--resume",
               "--speed", "1.25")
    assert done.returncode == 0, done.stderr
    assert served_speech(embedded_server) - base == 12, "the resumed run asked only for the 7 missing segments"
    samples, _ = decode_audio(out.read_bytes(), "flac")
    assert 12 * 1.5 / 1.25 < len(samples) / 24000 < 12 * 3.0 / 1.25
    assert np.abs(samples).max() > 0.05

    bad = cli("say", "Hello.", "-o", str(tmp_path / "x.mp3"), "--server", embedded_server.url, "--voice", "nobody")
    assert bad.returncode == 1 and "404" in bad.stderr and "nobody" in bad.stderr


def test_voices_list_from_a_server(embedded_server):
    table = cli("voices", "list", "--server", embedded_server.url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["id", "name", "kind", "engine", "language", "source"]
    assert any(row.startswith("hibari-heart") for row in rows)
    as_json = json.loads(cli("voices", "list", "--server", embedded_server.url, "--json").stdout)
    assert as_json["object"] == "list" and "hibari-heart" in [v["id"] for v in as_json["data"]]

    unreachable = cli("voices", "list", "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_voices_in_a_local_folder(tmp_path):
    from engine.voice_store import VoiceManifest, save_voice

    folder = tmp_path / "voices"
    t = np.arange(24000) / 24000
    save_voice(folder, VoiceManifest(id="ada", name="Ada", kind="clone", language="english", ref_text="Hello there."),
               (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))
    save_voice(folder, VoiceManifest(id="night", name="Night narrator", kind="design", description="calm and low"))

    listed = cli("voices", "list", "--voices-dir", str(folder))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["ada", "night"]

    removed = cli("voices", "rm", "ada", "--voices-dir", str(folder))
    assert removed.returncode == 0 and "removed ada" in removed.stdout
    assert not (folder / "ada").exists()
    assert [v["id"] for v in json.loads(cli("voices", "list", "--voices-dir", str(folder), "--json").stdout)["data"]] \
        == ["night"]
    missing = cli("voices", "rm", "ada", "--voices-dir", str(folder))
    assert missing.returncode == 1 and "no voice 'ada'" in missing.stderr

    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    for args in (["add", "Bob", str(clip), "--text", "hi"], ["design", "Bob", "--description", "x", "--sample-text", "y"]):
        refused = cli("voices", *args, "--voices-dir", str(folder))
        assert refused.returncode == 1 and "needs a running server" in refused.stderr


def test_voices_add_list_rm_through_a_qwen_server(tmp_path, tmp_path_factory):
    server = start_qwen_server(tmp_path_factory, "cli_voices_qwen")
    try:
        clip = tmp_path / "bob.wav"
        clip.write_bytes(wav_clip())
        consent = httpx.post(f"{server.v1}/audio/voice_consents", data={"name": "Bob", "language": "en"},
                             files={"recording": ("c.wav", clip.read_bytes())}, timeout=60).json()["id"]
        add = ["voices", "add", "Bob Cli", str(clip), "--text", "Hello, this is Bob speaking.", "--language",
               "english", "--consent", consent, "--server", server.url]
        added = cli(*add)
        assert added.returncode == 0, added.stderr
        assert added.stdout.strip() == "added bob-cli (Bob Cli)"
        rows = cli("voices", "list", "--server", server.url).stdout.splitlines()
        assert any(r.split()[0] == "bob-cli" and r.split()[-1] == "uploaded" for r in rows), rows
        clash = cli(*add)
        assert clash.returncode == 1 and "409" in clash.stderr

        # The server's voices folder, read without the server: the same voice is there.
        voices_dir = server.args[server.args.index("--voices-dir") + 1]
        local = json.loads(cli("voices", "list", "--voices-dir", voices_dir, "--json").stdout)
        assert [v["id"] for v in local["data"]] == ["bob-cli"]

        shipped = cli("voices", "rm", "default", "--server", server.url)
        assert shipped.returncode == 1 and "403" in shipped.stderr
        removed = cli("voices", "rm", "bob-cli", "--server", server.url)
        assert removed.returncode == 0 and "removed bob-cli" in removed.stdout
        assert httpx.get(f"{server.v1}/audio/voices/bob-cli").status_code == 404
    finally:
        server.stop()


@pytest.mark.parametrize("args,message", [
    (["say", "Hi.", "-o", "x.doc"], "suffix"),
    (["say", "Hi."], "-o FILE"),
    (["say", "Hi.", "-o", "x.mp3", "--speed", "9"], "--speed"),
])
def test_say_refuses_what_it_cannot_do(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and message in result.stderr
