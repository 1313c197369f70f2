"""Clone samples without a transcript, on a gateway that hears: the tiny random Qwen3 Base model clones, the
packaged Whisper tiny.en transcribes the sample (real speech of the embedded voice), and the clone is made
in context from that transcript, through every door that takes a sample: POST /v1/audio/voices (as the
OpenAI SDK sends it), the Chatterbox upload, and inline `ref_audio` on the speech endpoint."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from engine.voice_store import encode_wav
from tests.asr_model import embedded_speech, recall, tiny_en
from tests.server import Server, start_server

SAMPLE_TEXT = "Hello, my name is Grace, and this is how I sound when I read a story aloud."
SHORT = {"max_new_tokens": 8}  # 7 codec frames: enough to prove a voice speaks


@pytest.fixture(scope="module")
def sample() -> bytes:
    return encode_wav(embedded_speech(SAMPLE_TEXT))


@pytest.fixture(scope="module")
def hearing_gateway(tmp_path_factory: pytest.TempPathFactory, tiny_base_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("hearing"), "--engine", "qwen", "--qwen-base", str(tiny_base_dir),
                          "--asr-model", str(tiny_en()))
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


def voice(server: Server, voice_id: str) -> dict:
    r = httpx.get(f"{server.v1}/audio/voices/{voice_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_openai_sdk_clone_is_in_context_with_the_heard_transcript(hearing_gateway: Server, sample: bytes):
    sdk = openai.OpenAI(base_url=hearing_gateway.v1, api_key="unused", max_retries=0, timeout=300)
    consent = sdk.audio.voice_consents.create(name="Grace", language="en-US", recording=("consent.wav", sample))
    created = sdk.audio.voices.create(name="Grace Heard", audio_sample=("grace.wav", sample), consent=consent.id)
    card = voice(hearing_gateway, created.id)
    assert card["clone_mode"] == "in_context" and not card.get("x_vector_only")
    assert card["ref_text_source"] == "transcribed" and recall(SAMPLE_TEXT, card["ref_text"]) >= 0.8, card
    r = httpx.post(f"{hearing_gateway.v1}/audio/speech", json={
        "model": "gpt-4o-mini-tts-2025-12-15", "voice": {"id": created.id}, "input": "Hi.", "response_format": "wav",
        **SHORT}, timeout=300)
    assert r.status_code == 200 and len(r.content) > 44


def test_a_given_transcript_is_kept_and_said_to_be_given(hearing_gateway: Server, sample: bytes):
    r = httpx.post(f"{hearing_gateway.v1}/audio/voices", files={"audio_sample": ("g.wav", sample)},
                   data={"name": "Grace Given", "ref_text": SAMPLE_TEXT}, timeout=300)
    assert r.status_code == 200, r.text
    card = voice(hearing_gateway, r.json()["id"])
    assert card["ref_text"] == SAMPLE_TEXT and card["ref_text_source"] == "given"
    assert card["clone_mode"] == "in_context"


def test_a_language_the_recognizer_cannot_hear_makes_an_x_vector_clone(hearing_gateway: Server, sample: bytes):
    """The packaged model hears English only: a sample said to be Chinese is not given an English guess."""
    r = httpx.post(f"{hearing_gateway.v1}/audio/voices", files={"audio_sample": ("g.wav", sample)},
                   data={"name": "Grace Chinese", "language": "zh"}, timeout=300)
    assert r.status_code == 200, r.text
    card = voice(hearing_gateway, r.json()["id"])
    assert card["clone_mode"] == "x_vector" and card.get("ref_text") is None and "ref_text_source" not in card


def test_the_chatterbox_upload_is_transcribed(hearing_gateway: Server, sample: bytes):
    r = httpx.post(f"{hearing_gateway.url}/api/voices/upload", files={"file": ("grace_box.wav", sample)}, timeout=300)
    assert r.status_code == 200, r.text
    card = voice(hearing_gateway, r.json()["name"])
    assert card["clone_mode"] == "in_context" and card["ref_text_source"] == "transcribed"
    assert recall(SAMPLE_TEXT, card["ref_text"]) >= 0.8


def test_inline_ref_audio_without_ref_text_is_transcribed(hearing_gateway: Server, sample: bytes):
    def transcriptions() -> float:
        metrics = httpx.get(hearing_gateway.url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('speech_gateway_transcriptions_total{outcome="ok"'))

    before = transcriptions()
    r = httpx.post(f"{hearing_gateway.v1}/audio/speech", json={
        "model": "qwen3-tts", "voice": "ignored", "input": "Hi.", "response_format": "wav",
        "ref_audio": base64.b64encode(sample).decode(), **SHORT}, timeout=300)
    assert r.status_code == 200 and len(r.content) > 44, r.text
    assert transcriptions() == before + 1
    heard = re.findall(r"inline clone: ref_audio came without ref_text; transcribed (\d+) words", hearing_gateway.log())
    assert heard and int(heard[-1]) >= len(SAMPLE_TEXT.split()) - 3, hearing_gateway.log()[-3000:]
