"""Fuzzing a real server: schemathesis from the committed OpenAPI document, hypothesis on the WebSockets.

Valid and invalid requests are generated for every documented operation; every response must be a
non-5xx whose status code, content type, headers and JSON body are the ones the document promises.
The WebSockets get frame sequences (valid, malformed, junk) and must never crash a session.
`FUZZ_CASES` sets the examples per operation and `FUZZ_WS_CASES` per socket (CI defaults below; try
`FUZZ_CASES=3000 FUZZ_WS_CASES=1000` locally); `FUZZ_SEED=random` explores instead of the repeatable
derandomized run CI does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.ops.openapi_export import DEFAULT_PATH
from engine.base import SAMPLE_RATE
from engine.voice_store import encode_wav
from tests.asr_model import tiny_en
from tests.server import ROOT, Server, start_server

FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "250"))
FUZZ_SEED = os.environ.get("FUZZ_SEED", "")
# Synthesis is the only costly answer: valid inputs are cut to this many characters so a run stays
# within its time budget (4096-character texts are still sent, as invalid-length ones, and rejected).
SPOKEN_CHARS = 120
# The document cannot enumerate models and voices (names are open-ended), so random strings would
# almost always stop at 400 unknown model / 404 unknown voice: mix in names this server knows.
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-1-hd-1106", "hibari")
VOICES = ("alloy", "nova", "heart", "hibari-heart", {"id": "alloy"})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

schema = schemathesis.openapi.from_path(ROOT / DEFAULT_PATH)


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 256


def _speakable_item(body: object) -> st.SearchStrategy:
    # Only fields that already satisfy the schema are swapped, so an invalid case stays invalid.
    if not isinstance(body, dict):
        return st.just(body)
    body = dict(body)
    for key in ("input", "text"):  # OpenAI's field, and Chatterbox's (POST /api/tts)
        if isinstance(body.get(key), str) and 0 < len(body[key]) <= 4096:
            body[key] = body[key][:SPOKEN_CHARS]
    voice = body.get("voice")
    valid_voice = _valid_name(voice) or (isinstance(voice, dict) and set(voice) == {"id"} and _valid_name(voice["id"]))
    if not (_valid_name(body.get("model")) and valid_voice):
        return st.just(body)
    known = st.tuples(st.sampled_from(MODELS), st.sampled_from(VOICES)).map(
        lambda mv: {**body, "model": mv[0], "voice": mv[1]})
    return st.one_of(known, st.just(body))


# A consent recording (POST /v1/audio/voice_consents) is 3-30 s of sound: random bytes never are, so a
# valid WAV is mixed in, and the stored consent's answer is checked too. Only where every field already
# has its documented type: a form sends `false` as the text "false", which is a valid name or language,
# so a negative case would become a valid request with the recording replaced.
RECORDING = encode_wav((0.3 * np.sin(np.arange(int(3.5 * SAMPLE_RATE)) / 9)).astype(np.float32))


def _recordable(body: dict) -> st.SearchStrategy:
    if not (isinstance(body.get("recording"), bytes | str) and isinstance(body.get("name"), str)
            and isinstance(body.get("language"), str)):
        return st.just(body)
    return st.one_of(st.just({**body, "recording": RECORDING}), st.just(body))


@schema.hook("flatmap_body")
def _speakable(context: schemathesis.HookContext, body: object) -> st.SearchStrategy:
    if isinstance(body, dict) and isinstance(body.get("items"), list):  # the batch endpoint
        return st.tuples(*map(_speakable_item, body["items"])).map(lambda items: {**body, "items": list(items)})
    if isinstance(body, dict) and "recording" in body:
        return _recordable(body)
    return _speakable_item(body)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A roomy queue: the fuzzer sends one request at a time, a 429 would only hide a real answer.
    # The packaged Whisper tiny.en serves /v1/audio/transcriptions and /translations (else they are 503s).
    server = start_server(tmp_path_factory.mktemp("fuzz"), "--max-concurrent", "2", "--max-queue", "16",
                          "--request-timeout", "30", "--asr-model", str(tiny_en()))
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


@schema.parametrize()
@settings(max_examples=FUZZ_CASES, deadline=None, derandomize=FUZZ_SEED != "random",
          suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_document(case: schemathesis.Case, fuzz_server: Server) -> None:
    case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60)


# -- the WebSockets: not in the OpenAPI document, so hypothesis drives them directly ----------------
WS_CASES = int(os.environ.get("FUZZ_WS_CASES", "40"))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=6)
SHORT_TEXT = st.text(max_size=60) | st.sampled_from(["Hello there.", "One. Two. Three.", " ", "\U0001f600", "¹²³"])
FIELDS = {  # plausible values, the wrong type, or anything
    "sampleRate": st.sampled_from([8000, 16000, 24000, 48000, 12345]), "sample_rate": st.sampled_from([16000, 7]),
    "encoding": st.sampled_from(["pcm16", "pcm32f", "mp3"]), "voice": st.sampled_from(["alloy", "heart", "nobody"]),
    "language": st.sampled_from(["english", "auto", "klingon"]), "text": SHORT_TEXT,
    "priority": st.sampled_from(["normal", "high", "urgent"]), "model": st.sampled_from(["tts-1", "hibari", "nope"]),
    "speed": st.sampled_from([0.25, 1.0, 9.0]), "seed": st.sampled_from([0, -1, 2**70]), "authToken": st.text(max_size=8),
    "instructions": st.text(max_size=20), "reason": st.text(max_size=8), "response_format": st.sampled_from(["pcm", "mp3"]),
}
BAD_CLOSE = {1011}  # internal error: a frame must never crash the session


def ws_frames(types: tuple[str, ...], fields: dict[str, st.SearchStrategy] | None = None
              ) -> st.SearchStrategy[list[str | bytes]]:
    message = st.fixed_dictionaries(
        {"type": st.sampled_from(types) | st.text(max_size=12)},
        optional={name: values | JSON for name, values in {**FIELDS, **(fields or {})}.items()},
    ).map(json.dumps)
    frame = message | JSON.map(json.dumps) | st.text(max_size=80) | st.binary(max_size=64)
    return st.lists(frame, min_size=1, max_size=6)


def exchange(url: str, frames: list[str | bytes]) -> None:
    """Send the frames, read until the server falls quiet or closes, and check everything it said."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, open_timeout=10, close_timeout=5) as ws:
        try:
            for frame in frames:
                ws.send(frame)
            while True:
                message = ws.recv(timeout=0.4)
                if isinstance(message, str):
                    event = json.loads(message)
                    assert isinstance(event.get("type"), str), message
                    assert event.get("code") not in ("SYNTHESIS_ERROR", "internal_error"), message
                else:
                    assert len(message) % 2 == 0 and message, "PCM frames hold whole samples and are never empty"
        except TimeoutError:
            pass  # quiet: the frames were all answered
        except ConnectionClosed:
            pass
        code = ws.close_code if ws.close_code is not None else 1000
    assert code not in BAD_CLOSE, f"closed with {code}: {ws.close_reason}"


@settings(max_examples=WS_CASES, deadline=None, derandomize=FUZZ_SEED != "random",
          suppress_health_check=list(HealthCheck), database=None)
@given(frames=ws_frames(("start", "speak", "cancel", "stop")))
def test_speak_socket_survives_any_frames(fuzz_server: Server, frames: list[str | bytes]) -> None:
    exchange(fuzz_server.ws_url + "/api/v1/speak", frames)


@settings(max_examples=WS_CASES, deadline=None, derandomize=FUZZ_SEED != "random",
          suppress_health_check=list(HealthCheck), database=None)
@given(frames=ws_frames(("session.config", "input.text", "input.done", "session.close")))
def test_stream_socket_survives_any_frames(fuzz_server: Server, frames: list[str | bytes]) -> None:
    exchange(fuzz_server.ws_url + "/v1/audio/speech/stream", frames)


CHATTERBOX_FIELDS = {  # /ws/tts (app/chatterbox): its own names, nested objects included
    "id": st.sampled_from(["r1", "r2"]), "voice_path": st.sampled_from(["hibari-heart.wav", "/etc/passwd", ""]),
    "language_id": st.sampled_from(["en", "xx"]),
    "voice": st.sampled_from([{"audio_prompt_path": "/app/voices/hibari-heart.wav", "exaggeration": 3}, "nobody"]),
    "audio": st.fixed_dictionaries({}, optional={
        "format": st.sampled_from(["pcm_s16le", "wav", "mp3"]), "sample_rate": st.sampled_from([16000, 7]),
        "stream": st.booleans(), "chunk_size_ms": st.sampled_from([10, 40, 0])}),
}


@settings(max_examples=WS_CASES, deadline=None, derandomize=FUZZ_SEED != "random",
          suppress_health_check=list(HealthCheck), database=None)
@given(frames=ws_frames(("say", "set_voice"), CHATTERBOX_FIELDS))
def test_chatterbox_socket_survives_any_frames(fuzz_server: Server, frames: list[str | bytes]) -> None:
    exchange(fuzz_server.ws_url + "/ws/tts", frames)


def test_sockets_still_speak_after_the_fuzzing(fuzz_server: Server) -> None:
    from websockets.sync.client import connect

    with connect(fuzz_server.ws_url + "/api/v1/speak") as ws:
        ws.send(json.dumps({"type": "speak", "text": "Still speaking after all that."}))
        pcm = b""
        while not isinstance(message := ws.recv(timeout=30), str) or json.loads(message)["type"] != "audio_end":
            pcm += message if isinstance(message, bytes) else b""
    assert len(pcm) > 24000
