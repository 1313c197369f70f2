"""/v1/audio/voices end to end on tiny random Qwen3 checkpoints: upload, list, speak, design, inline, delete.

One gateway (Base + VoiceDesign) serves the module; the last Qwen test restarts it on the same voices
folder. Random weights speak noise, so the tests check what the gateway promises (files, status codes,
messages, prompt-cache counters, audio that decodes), not what the voice sounds like.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest

from app.voices.protocol import MAX_AUDIO_BYTES
from engine.voice_names import check_voice_name, voice_id_for
from engine.voice_store import read_reference
from tests.conftest import decode_audio
from tests.engine.test_audio_import import BOMBS
from tests.server import Server, start_server

SR = 24_000
ADA_TEXT = "Hello, my name is Ada, and this is how I sound when I speak."
SHORT = {"max_new_tokens": 8}  # 7 codec frames: enough to prove a voice speaks, cheap on a busy CPU


# -- helpers shared by the voice test modules -------------------------------------------------------
def build_checkpoints(root: Path, *kinds: str) -> dict[str, Path]:
    from engine.qwen.random_model import write_random_checkpoint

    return {kind: write_random_checkpoint(root / kind, kind, "tiny", seed=0) for kind in kinds}


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A voice-like signal: a gliding harmonic tone in syllable-rate bursts, with a little breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(120 + 15 * seed + 20 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voiced = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5
    return (voiced * syllables + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def encode(samples: np.ndarray, fmt: str) -> bytes:
    """Encode mono float32 24 kHz with PyAV: mp3, ogg (opus), flac or wav."""
    codec, rate = {"mp3": ("libmp3lame", SR), "ogg": ("libopus", 48_000), "flac": ("flac", SR),
                   "wav": ("pcm_s16le", SR)}[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = SR
        for converted in av.AudioResampler(format=stream.format.name, layout="mono", rate=rate).resample(frame):
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return buf.getvalue()


def upload(server: Server, name: str, audio: bytes | None, filename: str = "voice.mp3", **fields: object
           ) -> httpx.Response:
    files = {"audio_sample": (filename, audio, "application/octet-stream")} if audio is not None else None
    data = {"name": name, **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}}
    return httpx.post(server.v1 + "/audio/voices", data=data, files=files, timeout=120)


def prompt_stats(server: Server) -> dict:
    engines = httpx.get(server.url + "/readyz", timeout=10).json()["engines"]
    return next(e for e in engines if e["name"] == "qwen")["details"]["prompt_cache"]


def speak(server: Server, voice: object, **extra: object) -> httpx.Response:
    body = {"model": "tts-1", "input": "Hello there.", "voice": voice, "response_format": "wav", **SHORT, **extra}
    return httpx.post(server.v1 + "/audio/speech", json=body, timeout=120)


def sdk(server: Server, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(**{"base_url": server.v1, "api_key": "unused", "max_retries": 0, **kwargs})


def hidden_entries(voices: Path) -> list[str]:
    """Work entries left in a voices folder (the prompt cache and the quota's lock file are the only hidden
    entries allowed), its consents folder included."""
    folders = [voices, *([voices / "consents"] if (voices / "consents").is_dir() else [])]
    return sorted(p.name for f in folders for p in f.iterdir()
                  if p.name.startswith(".") and p.name not in (".prompt-cache", ".quota.lock"))


def consent(server: Server, name: str = "Me", **kwargs: object) -> str:
    """A consent recording's id, made with the SDK as a client makes one."""
    made = sdk(server, **kwargs).audio.voice_consents.create(
        name=name, language="en-US", recording=("consent.wav", encode(speechlike(3.5, seed=9), "wav"), "audio/wav"))
    return made.id


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# -- fixtures ---------------------------------------------------------------------------------------
@dataclass
class Gateway:
    server: Server
    tmp: Path
    args: tuple[str, ...]
    restarts: int = 0

    @property
    def voices(self) -> Path:
        return self.tmp / "voices"

    def restart(self) -> None:
        self.server.stop()
        self.restarts += 1
        self.server = start_server(self.tmp / f"run{self.restarts}", *self.args)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("voice_models"), "base", "voice_design")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("voices_api")
    args = ("--engine", "qwen", "--qwen-base", str(checkpoints["base"]), "--qwen-voice-design",
            str(checkpoints["voice_design"]), "--voices-dir", str(tmp / "voices"),
            # OpenAI names an operator points elsewhere: a shipped designed voice, and one uploaded later.
            "--voice-map", "nova=narrator-design", "--voice-map", "Shimmer=Ada Lovelace")
    gw = Gateway(start_server(tmp / "run0", *args), tmp, args)
    yield gw
    gw.server.stop()
    assert "Traceback" not in gw.server.log(), gw.server.log()[-4000:]


# -- names ------------------------------------------------------------------------------------------
def test_ids_are_safe_slugs_of_names() -> None:
    assert voice_id_for("Ada Lovelace") == "ada-lovelace"
    assert voice_id_for("Zoë  O'Brien!") == "zoe-o-brien"
    assert voice_id_for("../../etc/passwd") == "etc-passwd"
    assert voice_id_for("小明") == voice_id_for("小明") != voice_id_for("小红")
    assert voice_id_for("小明").startswith("voice-")
    assert voice_id_for("ADA lovelace") == voice_id_for("ada-Lovelace")  # one voice, whatever the case
    assert check_voice_name("  Ada  ") == "Ada"


# -- upload, list, speak ----------------------------------------------------------------------------
def test_upload_with_the_sdk_then_list_and_speak(gateway: Gateway) -> None:
    client = sdk(gateway.server)
    clip = encode(speechlike(4.5), "mp3")
    agreed = consent(gateway.server, "Ada")
    voice = client.audio.voices.create(name="Ada Lovelace", audio_sample=("ada.mp3", clip, "audio/mpeg"),
                                       consent=agreed, extra_body={"ref_text": ADA_TEXT, "language": "en"})
    assert (voice.id, voice.name, voice.object, voice.type) == ("ada-lovelace", "Ada Lovelace", "audio.voice",
                                                                "audio_sample")
    card = voice.model_dump()
    assert card["created_at"] > 0 and card["kind"] == "clone" and card["source"] == "uploaded"
    assert card["language"] == "english" and card["ref_text"] == ADA_TEXT and card["deletable"] is True
    assert card["clone_mode"] == "in_context"

    folder = gateway.voices / "ada-lovelace"
    assert sorted(p.name for p in folder.iterdir()) == ["reference.wav", "voice.json"]
    assert json.loads((folder / "voice.json").read_text())["consent"] == agreed
    samples, rate = read_reference(folder / "reference.wav")
    assert rate == SR and 4.0 < len(samples) / SR < 5.0  # cleaned: 24 kHz mono, silence trimmed

    listed = httpx.get(gateway.server.v1 + "/audio/voices").json()
    # OpenAI's list shape (the SDKs read `data`), and the same cards under `voices` (Open WebUI reads that)
    assert set(listed) == {"object", "data", "voices"} and listed["object"] == "list"
    assert listed["voices"] == listed["data"]
    assert {"id": "ada-lovelace", "name": "Ada Lovelace"}.items() <= next(
        v for v in listed["data"] if v["id"] == "ada-lovelace").items()
    assert httpx.get(gateway.server.v1 + "/audio/voices/ADA-LOVELACE").json()["name"] == "Ada Lovelace"
    sample = httpx.get(gateway.server.v1 + "/audio/voices/ada-lovelace/sample")
    assert sample.headers["content-type"] == "audio/wav" and sample.content == (folder / "reference.wav").read_bytes()

    before = prompt_stats(gateway.server)
    for voice_arg in ("Ada Lovelace", {"id": "ada-lovelace"}):
        with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice=voice_arg, input="Hello there.", response_format="wav",
                extra_body=SHORT) as response:
            assert response.headers["x-voice"] == "ada-lovelace"
            audio, _ = decode_audio(response.read(), "wav")
        assert audio.size > 0 and np.abs(audio).max() > 0
    after = prompt_stats(gateway.server)
    assert after["computed"] - before["computed"] == 1  # first use computed it, the second reused it
    assert after["memory_hits"] - before["memory_hits"] >= 1


def test_voice_map_reaches_any_voice_through_openai_names(gateway: Gateway) -> None:
    """pipecat and livekit accept only OpenAI's 13 names: `--voice-map` makes those reach any voice."""
    listed = {v["id"]: {"aliases": [], **v} for v in httpx.get(gateway.server.v1 + "/audio/voices").json()["data"]}
    assert "nova" in listed["narrator-design"]["aliases"] and "shimmer" in listed["ada-lovelace"]["aliases"]
    owners = [v["id"] for v in listed.values() if {"nova", "shimmer"} & set(v["aliases"])]
    assert sorted(owners) == ["ada-lovelace", "narrator-design"]  # taken from the voice they stood for
    assert "alloy" in listed["default"]["aliases"]  # unmapped names keep their voice

    client = sdk(gateway.server)
    for name, voice_id in (("nova", "narrator-design"), ("shimmer", "ada-lovelace"), ("alloy", "default")):
        # The way pipecat's OpenAITTSService asks: a streamed pcm response for one of the 13 names.
        with client.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice=name, input="Hello there.", response_format="pcm",
                extra_body=SHORT) as response:
            assert response.headers["x-voice"] == voice_id, name
            assert len(response.read()) > 0


REJECTIONS = [
    # (case, name, clip, extra fields, status, param, fragment of the message)
    ("not audio", "Junk", b"definitely not audio " * 100, {}, 400, "audio_sample", "could not decode"),
    ("too short", "Short", encode(speechlike(1.5), "mp3"), {}, 400, "audio_sample", "at least 3 s"),
    ("too long", "Long", encode(speechlike(34), "ogg"), {}, 400, "audio_sample", "at most 30 s"),
    ("silent", "Quiet", encode(np.zeros(5 * SR, np.float32), "wav"), {}, 400, "audio_sample", "silent"),
    ("flac bomb", "Bomb", BOMBS["flac-10Hz"](), {}, 400, "audio_sample", "10 Hz is outside"),
    ("matroska bomb", "Bomb Two", BOMBS["matroska-pcm-100Hz"](), {}, 400, "audio_sample", "100 Hz is outside"),
    ("too big", "Huge", b"\0" * (MAX_AUDIO_BYTES + 1), {}, 413, "audio_sample", "10 MiB"),
    ("unknown consent", "Unknown Consent", encode(speechlike(4), "flac"), {"consent": "cons_nobody"}, 400,
     "consent", "no consent recording"),
    ("consents folder", "Consents", None, {}, 400, "name", "reserved"),
    ("empty name", "", None, {}, 400, "name", ""),
    ("no letters", "!!!", None, {}, 400, "name", "letter or digit"),
    ("control character", "Ada\tTwo", None, {}, 400, "name", "control"),
    ("name too long", "x" * 65, None, {}, 400, "name", "64"),
    ("OpenAI voice", "Alloy", None, {}, 400, "name", "reserved"),
    ("speaker", "Uncle Fu", None, {}, 400, "name", "reserved"),
    ("speaker id", "ono_anna", None, {}, 400, "name", "reserved"),
    ("shipped voice", "Narrator (designed)", None, {}, 400, "name", "reserved"),
    ("embedded voice alias", "heart", None, {}, 400, "name", "reserved"),
    ("default", "DEFAULT", None, {}, 400, "name", "reserved"),
]


@pytest.mark.parametrize(("case", "name", "clip", "fields", "status", "param", "fragment"), REJECTIONS,
                         ids=[r[0] for r in REJECTIONS])
def test_rejected_uploads(gateway: Gateway, case: str, name: str, clip: bytes | None, fields: dict, status: int,
                          param: str, fragment: str) -> None:
    clip = clip if clip is not None else encode(speechlike(4), "mp3")
    response = upload(gateway.server, name, clip, **{"ref_text": "Some words.", **fields})
    error = error_of(response)
    assert (response.status_code, error["param"]) == (status, param), error
    assert fragment in error["message"], error
    assert not (gateway.voices / voice_id_for(name or "x") / "voice.json").exists()


def test_body_limit_is_enforced_before_reading(gateway: Gateway) -> None:
    """A Content-Length beyond the route's limit is refused from the headers alone (413, OpenAI's body)."""
    head = (f"POST /v1/audio/voices HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {20 * 1024 * 1024}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=30) as sock:
        sock.sendall(head)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:300]
    assert b'"param":"audio_sample"' in rest and b"10 MiB" in rest


def test_duplicates_and_concurrent_uploads_of_one_name(gateway: Gateway) -> None:
    clip = encode(speechlike(4, seed=1), "ogg")
    before = prompt_stats(gateway.server)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        barrier.wait()
        results.append(upload(gateway.server, "Twin", clip, ref_text="Two of us."))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
    clash = next(r for r in results if r.status_code == 409)
    assert error_of(clash)["code"] == "voice_exists" and clash.headers["x-should-retry"] == "false"
    assert sorted(p.name for p in (gateway.voices / "twin").iterdir()) == ["reference.wav", "voice.json"]
    assert hidden_entries(gateway.voices) == []
    # The Base model is loaded (an earlier test spoke): the new voice's prompt is computed in the
    # background after the upload answered, before anyone asks for it.
    deadline = time.monotonic() + 60
    while prompt_stats(gateway.server)["computed"] == before["computed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert prompt_stats(gateway.server)["computed"] == before["computed"] + 1

    for name in ("twin", "TWIN!", " Twin "):  # case and punctuation do not make a new voice
        response = upload(gateway.server, name, clip, ref_text="Two of us.")
        assert response.status_code == 409 and "exists already" in error_of(response)["message"]
    # The SDK retries 409 by default; x-should-retry: false stops it (one request in the access log).
    retrying = sdk(gateway.server, max_retries=2)
    clashes = gateway.server.log().count('"POST /v1/audio/voices HTTP/1.1" 409')
    with pytest.raises(openai.ConflictError):
        retrying.audio.voices.create(name="Twin", audio_sample=("t.ogg", clip), consent=consent(gateway.server),
                                     extra_body={"ref_text": "Two of us."})
    assert gateway.server.log().count('"POST /v1/audio/voices HTTP/1.1" 409') == clashes + 1


# -- design → clone ---------------------------------------------------------------------------------
def test_design_then_clone(gateway: Gateway) -> None:
    description = "Deep male baritone, calm and authoritative."
    sample_text = "The mission parameters have been updated."
    before = prompt_stats(gateway.server)
    response = httpx.post(gateway.server.v1 + "/audio/voices", timeout=180, json={
        "name": "Commander", "description": description, "sample_text": sample_text, "seed": 0})
    assert response.status_code == 200, response.text
    card = response.json()
    assert (card["id"], card["source"], card["type"], card["kind"]) == ("commander", "designed", "prompt", "clone")
    assert card["prompt"] == card["description"] == description and card["ref_text"] == sample_text
    assert prompt_stats(gateway.server)["computed"] - before["computed"] == 1  # Base cloned it before answering

    sample = httpx.get(gateway.server.v1 + card["sample_url"].removeprefix("/v1"))
    assert sample.status_code == 200 and sample.headers["content-type"] == "audio/wav"
    audio, _ = decode_audio(sample.content, "wav")
    assert 3.0 <= len(audio) / SR <= 30.0 and np.abs(audio).max() > 0.1
    assert sample.content == (gateway.voices / "commander" / "reference.wav").read_bytes()

    before = prompt_stats(gateway.server)
    spoken = speak(gateway.server, "Commander")
    assert spoken.status_code == 200 and spoken.headers["x-voice"] == "commander"
    after = prompt_stats(gateway.server)
    assert after["computed"] == before["computed"] and after["memory_hits"] > before["memory_hits"]

    # OpenAI's SDK shape of the same request: type "prompt", prompt = description, script_hint = sample text.
    storyteller = sdk(gateway.server).audio.voices.create(
        name="Storyteller", type="prompt", prompt="A warm, slow storyteller.",
        script_hint="Once upon a time, a curious fox lived here.", extra_body={"seed": 0}, timeout=180)
    assert (storyteller.id, storyteller.type, storyteller.prompt) == ("storyteller", "prompt",
                                                                     "A warm, slow storyteller.")
    missing = httpx.post(gateway.server.v1 + "/audio/voices", json={"name": "Mute", "type": "prompt"})
    assert missing.status_code == 400 and error_of(missing)["param"] == "description"
    # Random weights with this seed stop after 0.7 s: too short a reference, said so, nothing saved.
    short = httpx.post(gateway.server.v1 + "/audio/voices", timeout=180, json={
        "name": "Brief", "description": description, "sample_text": sample_text, "seed": 7})
    assert short.status_code == 400 and error_of(short)["param"] == "sample_text"
    assert "at least 3 s" in error_of(short)["message"] and not (gateway.voices / "brief").exists()


# -- inline cloning ---------------------------------------------------------------------------------
def test_inline_ref_audio(gateway: Gateway) -> None:
    clip = encode(speechlike(4, seed=3), "mp3")
    cache = gateway.voices / ".prompt-cache"
    files_before = sorted(cache.rglob("*.safetensors"))
    before = prompt_stats(gateway.server)
    b64 = base64.b64encode(clip).decode()

    with sdk(gateway.server).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Hello there.", response_format="wav",
            extra_body={"ref_audio": b64, "ref_text": "Four seconds of me.", **SHORT}) as response:
        assert response.headers["x-voice"].startswith("inline-")
        assert decode_audio(response.read(), "wav")[0].size > 0
    again = speak(gateway.server, "alloy", ref_audio=f"data:audio/mpeg;base64,{b64}", ref_text="Four seconds of me.")
    assert again.status_code == 200 and again.headers["x-voice"] == response.headers["x-voice"]
    after = prompt_stats(gateway.server)
    assert after["computed"] - before["computed"] == 1 and after["memory_hits"] > before["memory_hits"]
    assert sorted(cache.rglob("*.safetensors")) == files_before  # one-off prompts stay in memory
    assert speak(gateway.server, "alloy", ref_audio=b64, x_vector_only_mode=True).status_code == 200
    # No ref_text on a server without a speech recognizer: an x-vector clone, as for uploads (no 400).
    assert speak(gateway.server, "alloy", ref_audio=b64).status_code == 200

    # A stored voice's id as ref_audio (its transcript by default): the stored voice's prompt is reused.
    before = prompt_stats(gateway.server)
    assert speak(gateway.server, "alloy", ref_audio="ada-lovelace").status_code == 200
    assert prompt_stats(gateway.server)["computed"] == before["computed"]

    refusals = [
        ({"ref_audio": "https://example.com/voice.wav", "ref_text": "x"}, "ref_audio", "never fetched"),
        ({"ref_audio": "file:///etc/passwd", "ref_text": "x"}, "ref_audio", "never fetched"),
        ({"ref_audio": "not base64 at all!", "ref_text": "x"}, "ref_audio", "base64"),
        ({"ref_audio": base64.b64encode(b"noise" * 99).decode(), "ref_text": "x"}, "ref_audio", "could not decode"),
        ({"ref_audio": base64.b64encode(BOMBS["nut-pcm-400Hz"]()).decode(), "ref_text": "x"}, "ref_audio",
         "400 Hz is outside"),
        ({"ref_audio": b64, "ref_text": "x", "model": "hibari"}, "model", "Qwen3"),
    ]
    for extra, param, fragment in refusals:
        response = speak(gateway.server, "alloy", **extra)
        assert response.status_code == 400 and error_of(response)["param"] == param, (extra, response.text)
        assert fragment in error_of(response)["message"]
    batch = httpx.post(gateway.server.v1 + "/audio/speech/batch", timeout=60, json={"items": [
        {"model": "tts-1", "input": "Hi.", "voice": "alloy", "ref_audio": b64, "ref_text": "x"}]}).json()
    assert batch["data"][0]["status"] == "error" and batch["data"][0]["error"]["param"] == "ref_audio"


# -- restart, then delete ---------------------------------------------------------------------------
def test_restart_keeps_voices_and_prompts_then_delete(gateway: Gateway) -> None:
    from engine.qwen.prompts import ReferenceClip

    gateway.restart()
    server = gateway.server
    ids = {v["id"] for v in httpx.get(server.v1 + "/audio/voices").json()["data"]}
    assert {"ada-lovelace", "twin", "commander", "storyteller"} <= ids
    assert speak(server, "Ada Lovelace").status_code == 200
    stats = prompt_stats(server)
    assert (stats["computed"], stats["disk_hits"]) == (0, 1)  # the prompt came back from disk, not recomputed

    folder = gateway.voices / "ada-lovelace"
    digest = ReferenceClip(*read_reference(folder / "reference.wav"), ADA_TEXT).digest()
    prompt_files = list((gateway.voices / ".prompt-cache").glob(f"*/{digest}.safetensors"))
    assert len(prompt_files) == 1
    deleted = sdk(server).audio.voices.delete("ada-lovelace")
    assert (deleted.id, deleted.deleted, deleted.object) == ("ada-lovelace", True, "audio.voice.deleted")
    assert not folder.exists() and not prompt_files[0].exists() and hidden_entries(gateway.voices) == []
    assert prompt_stats(server)["entries"] == stats["entries"] - 1  # and out of memory
    for response in (httpx.get(server.v1 + "/audio/voices/ada-lovelace"),
                     httpx.get(server.v1 + "/audio/voices/ada-lovelace/sample"),
                     httpx.delete(server.v1 + "/audio/voices/ada-lovelace"), speak(server, "Ada Lovelace")):
        assert response.status_code == 404 and error_of(response)["code"] == "voice_not_found", response.text
    assert "ada-lovelace" not in {v["id"] for v in httpx.get(server.v1 + "/audio/voices").json()["data"]}

    for protected, word in (("default", "shipped"), ("aiden", "built-in"), ("hibari-heart", "built in")):
        response = httpx.delete(server.v1 + f"/audio/voices/{protected}")
        assert response.status_code == 403 and word in error_of(response)["message"], response.text
        assert error_of(response)["code"] == "voice_protected"


# -- servers without the models ---------------------------------------------------------------------
def test_embedded_only_server_explains_what_is_missing(embedded_server: Server) -> None:
    response = upload(embedded_server, "Ada", encode(speechlike(4), "mp3"), ref_text="Hello.")
    assert response.status_code == 400 and "--engine qwen --qwen-base" in error_of(response)["message"]
    design = httpx.post(embedded_server.v1 + "/audio/voices", json={"name": "X", "description": "Calm.",
                                                                   "sample_text": "Hello there."})
    assert design.status_code == 400
    assert "--qwen-voice-design" in error_of(design)["message"] and "--qwen-base" in error_of(design)["message"]
    inline = speak(embedded_server, "alloy", ref_audio=base64.b64encode(b"x" * 64).decode(), ref_text="x")
    assert inline.status_code == 400 and "--qwen-base" in error_of(inline)["message"]
    assert httpx.get(embedded_server.v1 + "/audio/voices/hibari-heart").json().get("deletable", False) is False
    assert httpx.get(embedded_server.v1 + "/audio/voices/hibari-heart/sample").status_code == 404
    assert httpx.delete(embedded_server.v1 + "/audio/voices/hibari-heart").status_code == 403
    assert httpx.delete(embedded_server.v1 + "/audio/voices/nobody").status_code == 404


def test_api_keys_guard_the_voice_routes(keyed_server: Server) -> None:
    for response in (upload(keyed_server, "Ada", b"x"), httpx.delete(keyed_server.v1 + "/audio/voices/x"),
                     httpx.get(keyed_server.v1 + "/audio/voices/hibari-heart")):
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"


def test_sample_urls_with_control_characters(gateway: Gateway) -> None:
    """Lookups forgive case and surrounding whitespace; the header carries the stored id, never the URL's text."""
    for raw in ("default%0A", "DEFAULT%E2%80%A8", "%09default", "default%0D%0AX-Injected:%201"):
        response = httpx.get(gateway.server.v1 + f"/audio/voices/{raw}/sample", timeout=30)
        assert response.status_code in (200, 404), (raw, response.status_code)
        if response.status_code == 200:
            assert response.headers["content-disposition"] == 'attachment; filename="default.wav"'
            assert "x-injected" not in response.headers
        else:
            assert error_of(response)["code"] == "voice_not_found"
    assert httpx.get(gateway.server.v1 + "/audio/voices/default%0A/sample", timeout=30).status_code == 200


def test_max_voices(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    server = start_server(tmp_path, "--engine", "qwen", "--qwen-base", str(checkpoints["base"]), "--max-voices", "1")
    try:
        clip = encode(speechlike(4), "wav")
        assert upload(server, "First", clip, ref_text="Some words.").status_code == 200
        refused = upload(server, "Second", clip, ref_text="Some words.")
        assert refused.status_code == 403 and "--max-voices" in error_of(refused)["message"]
        assert 'speech_gateway_limit_hits_total{limit="max_voices"} 1.0' in httpx.get(server.url + "/metrics").text
        assert httpx.delete(server.v1 + "/audio/voices/first", timeout=30).status_code == 200
        assert upload(server, "Second", clip, ref_text="Some words.").status_code == 200
    finally:
        server.stop()
