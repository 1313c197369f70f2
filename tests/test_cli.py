"""`speech-gateway say`: text to a file, format from the suffix, progress on long input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import decode_audio
from tests.server import ROOT


def say(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "say", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("suffix,fmt", [(".mp3", "mp3"), (".wav", "wav"), (".flac", "flac")])
def test_say_to_file(tmp_path, suffix, fmt):
    out = tmp_path / f"hello{suffix}"
    result = say("Hello from the command line.", "-o", str(out))
    assert result.returncode == 0, result.stderr
    samples, _ = decode_audio(out.read_bytes(), fmt)
    assert 1.0 < len(samples) / 24000 < 5.0


def test_say_long_file_shows_progress(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text(" ".join(f"Line {i} of the book." for i in range(8)))
    out = tmp_path / "book.opus"
    result = say("--file", str(text), "-o", str(out), "--speed", "1.5")
    assert result.returncode == 0, result.stderr
    assert "8/8 segments" in result.stderr
    samples, _ = decode_audio(out.read_bytes(), "opus")
    assert len(samples) / 24000 > 3.0


def test_say_rejects_unknown_suffix(tmp_path):
    result = say("Hi.", "-o", str(tmp_path / "x.doc"))
    assert result.returncode != 0 and "suffix" in result.stderr
