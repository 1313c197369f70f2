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


# Runs the CLI with the named modules made unimportable, as in a venv without the `qwen` extra.
_WITHOUT = """
import sys
from importlib.abc import MetaPathFinder
blocked = set(sys.argv[1].split(","))
class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from app.cli.main import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("argv", [
    ["random-model", "DIR", "--kind", "base", "--size", "tiny"],
    ["serve", "--engine", "qwen", "--qwen-base", "DIR", "--port", "1"],
])
def test_missing_qwen_extra_is_one_line_naming_the_make_target(tmp_path, argv):
    argv = [str(tmp_path / "m") if a == "DIR" else a for a in argv]
    result = subprocess.run([sys.executable, "-c", _WITHOUT, "torch,qwen_tts", *argv], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "make serve EXTRAS=qwen" in lines[0], result.stderr
    assert "torch" in lines[0] or "qwen_tts" in lines[0], result.stderr
    assert not (tmp_path / "m").exists()


def test_random_model_is_quiet(tmp_path):
    """qwen_tts's SoX banner and flash-attn box look like errors and are harmless on CPU: not shown."""
    result = subprocess.run([sys.executable, "-m", "app.cli", "random-model", str(tmp_path / "m")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "SoX" not in out and "sox" not in out and "flash-attn" not in out, out
    assert out.strip().splitlines() == [f"wrote a random-weight tiny base checkpoint to {tmp_path / 'm'}"]


@pytest.mark.parametrize("fmt", ["ulaw", "alaw"])
def test_say_to_g711_file(tmp_path, fmt):
    from tests.audio.decode import decode

    out = tmp_path / f"hello.{fmt}"
    result = say("Hello from the command line.", "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert 1.0 < len(data) / 8000 < 5.0  # raw G.711: one byte a sample at 8 kHz, no header
    samples = decode(fmt, data, 8000)
    assert len(samples) == len(data) and 0.05 < float(abs(samples).max()) <= 1.0
