"""`speech-gateway transcribe` in this process, and the text formats it shares with the HTTP answers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from app.transcription.formats import srt, timestamp, vtt
from engine.asr import Segment
from engine.voice_store import encode_wav
from tests.asr_model import embedded_speech, tiny_en
from tests.server import ROOT

TEXT = "Captions come from the speech recognizer. They carry the times of each sentence."


def transcribe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "transcribe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_timestamps_and_cues():
    assert timestamp(0) == "00:00:00,000" and timestamp(3725.0456) == "01:02:05,046"
    assert timestamp(61.5, ".") == "00:01:01.500"
    segments = [Segment(id=0, start=0.0, end=1.25, text=" Hello there."),
                Segment(id=1, start=1.25, end=1.25, text=" Bye."),  # Whisper may end a segment at its start
                Segment(id=2, start=2.0, end=3.0, text="  ")]  # nothing to show: no cue
    assert srt(segments) == "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n00:00:01,250 --> 00:00:01,251\nBye.\n\n"
    assert vtt(segments) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n"
                             "00:00:01.250 --> 00:00:01.251\nBye.\n\n")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("cli") / "speech.wav"
    path.write_bytes(encode_wav(embedded_speech(TEXT)))
    return path


def test_text_srt_and_vtt_here(recording, tmp_path):
    result = transcribe(str(recording), "--asr-model", str(tiny_en()))
    assert result.returncode == 0, result.stderr
    heard = set(re.findall(r"[a-z]+", result.stdout.lower()))
    assert len(heard & set(re.findall(r"[a-z]+", TEXT.lower()))) >= 10, result.stdout
    out = tmp_path / "speech.srt"
    result = transcribe(str(recording), "-o", str(out), "--asr-model", str(tiny_en()), "--language", "en")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:0\d,\d{3}\n\w", out.read_text())
    result = transcribe(str(recording), "--format", "vtt", "--asr-model", str(tiny_en()))
    assert result.returncode == 0 and result.stdout.startswith("WEBVTT\n\n00:00:0"), result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "--asr-model"),
    (["--asr-model", "/nowhere/whisper"], "no such folder"),
    (["-o", "out.docx", "--asr-model", "x"], "suffix"),
    (["--asr-model", str(tiny_en()), "--language", "fr"], "English-only"),
])
def test_refusals_are_one_line(recording, args, message):
    result = transcribe(str(recording), *args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_file_that_is_not_audio(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all")
    result = transcribe(str(notes), "--asr-model", str(tiny_en()))
    assert result.returncode != 0 and "could not decode the file" in result.stderr
