"""Today's clients, unchanged, against a gateway on tiny random Qwen3 checkpoints (Base + VoiceDesign).

- OpenAI's Python SDK and Node SDK (tests/voices/node) run the custom-voice workflow: consent → clone
  from a sample with no transcript (an x-vector clone) → speak with `voice={"id"}` on a dated model →
  design from a prompt with no script → list/retrieve/update/delete consents → delete the voices.
- Open WebUI's three calls, as its audio router makes them: the two listings with no Authorization
  header (the server runs with `--public-listings`), then speech with the key.
- `--require-consent`, and `--max-voices` held under parallel uploads, in one process and in two
  sharing the folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from engine.neutral_scripts import SCRIPTS, neutral_script, written_language
from tests.conftest import decode_audio
from tests.engine.test_audio_import import BOMBS
from tests.server import Server, start_server
from tests.voices.test_voices_api import SHORT, build_checkpoints, encode, error_of, hidden_entries, speechlike

KEY = "sk-workflow"
NODE = Path(__file__).resolve().parent / "node"
DATED = "gpt-4o-mini-tts-2025-12-15"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("workflow_models"), "base", "voice_design")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("workflow"), "--engine", "qwen", "--qwen-base",
                          str(checkpoints["base"]), "--qwen-voice-design", str(checkpoints["voice_design"]),
                          "--api-key", KEY, "--public-listings")
    server.api_key = KEY
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=300)


def voices_dir(server: Server) -> Path:
    return Path(server.args[server.args.index("--voices-dir") + 1])


def consent_ids(server: Server) -> list[str]:
    folder = voices_dir(server) / "consents"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def test_python_sdk_runs_the_custom_voice_workflow(gateway: Server) -> None:
    sdk = client(gateway)
    recording = encode(speechlike(4, seed=5), "mp3")
    consent = sdk.audio.voice_consents.create(name="Grace", language="en-US",
                                              recording=("consent.mp3", recording, "audio/mpeg"))
    assert consent.id.startswith("cons_") and consent.object == "audio.voice_consent"
    assert (consent.name, consent.language) == ("Grace", "en-US") and consent.created_at > 0

    # The SDK's clone call: name, audio_sample, consent; no transcript. An x-vector clone, which says so.
    voice = sdk.audio.voices.create(name="Grace Hopper", consent=consent.id,
                                    audio_sample=("grace.wav", encode(speechlike(4.5, seed=6), "wav"), "audio/wav"))
    card = voice.model_dump()
    assert (voice.id, voice.object, voice.type, voice.name) == ("grace-hopper", "audio.voice", "audio_sample",
                                                                "Grace Hopper")
    assert card["clone_mode"] == "x_vector" and card["x_vector_only"] is True and card.get("ref_text") is None
    manifest = json.loads((voices_dir(gateway) / "grace-hopper" / "voice.json").read_text())
    assert manifest["consent"] == consent.id and manifest["x_vector_only"] is True

    with sdk.audio.speech.with_streaming_response.create(model=DATED, voice={"id": voice.id}, input="Hello there.",
                                                         response_format="wav", extra_body=SHORT) as response:
        assert response.headers["x-voice"] == "grace-hopper"
        audio, rate = decode_audio(response.read(), "wav")
    assert rate == 24_000 and audio.size > 0 and np.abs(audio).max() > 0

    # Designed from a prompt alone: the gateway writes the script, in the prompt's language.
    designed = sdk.audio.voices.create(name="Deep Narrator", type="prompt", prompt="A calm, deep narrator.",
                                       model="auto", extra_body={"seed": 0})
    card = designed.model_dump()
    assert (designed.type, designed.prompt, card["source"]) == ("prompt", "A calm, deep narrator.", "designed")
    assert card["ref_text"] == neutral_script("english") and card["language"] == "english"
    assert card["clone_mode"] == "in_context"

    # Consents: a cursor page at a time, newest first; retrieve, rename, delete.
    more = [sdk.audio.voice_consents.create(name=f"Extra {i}", language="fr-FR",
                                            recording=("c.mp3", recording, "audio/mpeg")).id for i in range(2)]
    everyone = [consent.id, *more]
    first = sdk.audio.voice_consents.list(limit=2)
    assert [c.id for c in first.data] == everyone[::-1][:2] and first.has_more is True
    assert [c.id for c in sdk.audio.voice_consents.list(limit=1)] == everyone[::-1]  # the SDK follows the cursor
    page = httpx.get(gateway.v1 + "/audio/voice_consents", params={"order": "asc", "limit": 2, "after": consent.id},
                     headers={"Authorization": f"Bearer {KEY}"}).json()
    assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == ("list", more[0], more[1], False)
    assert sdk.audio.voice_consents.retrieve(more[0]).name == "Extra 0"
    renamed = sdk.audio.voice_consents.update(more[0], name="Renamed")
    assert (renamed.id, renamed.name, renamed.language) == (more[0], "Renamed", "fr-FR")
    assert sdk.audio.voice_consents.retrieve(more[0]).name == "Renamed"
    for consent_id in everyone:
        deleted = sdk.audio.voice_consents.delete(consent_id)
        assert (deleted.id, deleted.deleted) == (consent_id, True)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.audio.voice_consents.retrieve(consent.id)
    assert missing.value.code == "consent_not_found"
    assert sdk.audio.voice_consents.list().data == [] and consent_ids(gateway) == []

    # Deleting the consent left the voice that names it; now the voices go too.
    for voice_id in ("grace-hopper", "deep-narrator"):
        assert sdk.audio.voices.delete(voice_id).deleted is True
    listed = httpx.get(gateway.v1 + "/audio/voices").json()["data"]  # --public-listings: no key needed
    assert not {"grace-hopper", "deep-narrator"} & {v["id"] for v in listed}
    assert hidden_entries(voices_dir(gateway)) == []


def test_node_sdk_runs_the_custom_voice_workflow(gateway: Server, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node and (NODE / "node_modules" / "openai").is_dir(), \
        "run `make test`: it installs the Node SDK (npm ci in tests/voices/node) first"
    sample, recording = tmp_path / "sample.mp3", tmp_path / "consent.wav"
    sample.write_bytes(encode(speechlike(4.5, seed=7), "mp3"))
    recording.write_bytes(encode(speechlike(4, seed=8), "wav"))
    env = {**os.environ, "GATEWAY_URL": gateway.v1, "GATEWAY_KEY": KEY, "SAMPLE": str(sample),
           "RECORDING": str(recording)}
    done = subprocess.run([node, str(NODE / "workflow.mjs")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout)

    assert seen["consent"]["object"] == "audio.voice_consent" and seen["consent"]["id"].startswith("cons_")
    assert (seen["voice"]["id"], seen["voice"]["type"], seen["voice"]["clone_mode"]) == (
        "grace-hopper", "audio_sample", "x_vector")
    assert seen["speech"]["voice"] == "grace-hopper" and seen["speech"]["type"] == "audio/wav"
    audio, _ = decode_audio(base64.b64decode(seen["speech"]["bytes"]), "wav")
    assert audio.size > 0 and np.abs(audio).max() > 0
    assert (seen["designed"]["type"], seen["designed"]["prompt"]) == ("prompt", "A calm, deep narrator.")
    second = seen["retrieved"]["id"]
    assert seen["listed"] == [second, seen["consent"]["id"]]  # newest first, one page at a time
    assert seen["updated"] == {**seen["retrieved"], "name": "Second, renamed"}
    assert [d["deleted"] for d in seen["deletedConsents"]] == [True, True]
    assert seen["afterDelete"] == {"status": 404, "code": "consent_not_found"}
    assert [d["id"] for d in seen["deletedVoices"]] == ["grace-hopper", "node-narrator"]
    assert consent_ids(gateway) == [] and hidden_entries(voices_dir(gateway)) == []


def test_open_webui_lists_every_voice_and_model_and_speaks(gateway: Server, keyed_server: Server) -> None:
    """Open WebUI's audio router: `requests.get(f"{base}/audio/voices")` and `.../audio/models` with no
    Authorization header, reading `voices` and `models`; then `POST {base}/audio/speech` with
    `{input, voice, model}` and its key, reading the whole body (its TTS_OPENAI_PARAMS add fields)."""
    keyed = {"Authorization": f"Bearer {KEY}"}
    made = httpx.post(gateway.v1 + "/audio/voices", headers=keyed, timeout=120,
                      data={"name": "Webui Voice", "ref_text": "The words of this sample."},
                      files={"audio_sample": ("w.wav", encode(speechlike(4, seed=4), "wav"))})
    assert made.status_code == 200, made.text
    uploaded = openai.types.audio.Voice(**made.json())
    try:
        voices = httpx.get(gateway.v1 + "/audio/voices", timeout=30)
        models = httpx.get(gateway.v1 + "/audio/models", timeout=30)
        assert voices.status_code == models.status_code == 200
        listed = {v["id"]: v["name"] for v in voices.json()["voices"]}
        every = {v["id"] for v in httpx.get(gateway.v1 + "/audio/voices", headers=keyed).json()["data"]}
        assert set(listed) == every and listed[uploaded.id] == "Webui Voice"
        assert {"default", "narrator-design", "hibari-heart"} <= set(listed)
        model_ids = [m["id"] for m in models.json()["models"]]
        assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", DATED, "qwen3-tts"} <= set(model_ids)
        assert models.json()["data"] == models.json()["models"]

        for voice, model in ((uploaded.id, DATED), ("hibari-heart", "tts-1")):
            speech = httpx.post(gateway.v1 + "/audio/speech", timeout=300,
                                json={"input": "Hello from Open WebUI.", "voice": voice, "model": model, **SHORT},
                                headers={"Content-Type": "application/json", **keyed})
            assert speech.status_code == 200 and speech.headers["content-type"] == "audio/mpeg", speech.text
            audio, _ = decode_audio(speech.content, "mp3")
            assert audio.size > 0
    finally:
        client(gateway).audio.voices.delete(uploaded.id)

    # Only the two listings open up: speech, the model list, samples and uploads still want the key.
    for response in (httpx.post(gateway.v1 + "/audio/speech", json={"input": "x", "voice": "default",
                                                                     "model": "tts-1"}),
                     httpx.get(gateway.v1 + "/models"), httpx.get(gateway.v1 + "/audio/voices/default/sample"),
                     httpx.get(gateway.v1 + "/audio/voice_consents"),
                     httpx.post(gateway.v1 + "/audio/voices", json={"name": "X", "prompt": "Calm."})):
        assert response.status_code == 401, response.request.url
    # Without --public-listings, a keyed server keeps them closed (Open WebUI then falls back to its six names).
    for path in ("/audio/voices", "/audio/models"):
        assert httpx.get(keyed_server.v1 + path).status_code == 401
        assert httpx.get(keyed_server.v1 + path, headers={
            "Authorization": f"Bearer {keyed_server.api_key}"}).status_code == 200


REFUSED_RECORDINGS = [
    # (case, fields, recording, status, param, fragment)
    ("not audio", {"name": "A", "language": "en"}, b"not audio at all " * 50, 400, "recording", "could not decode"),
    ("too short", {"name": "A", "language": "en"}, encode(speechlike(1.5), "wav"), 400, "recording", "at least 3 s"),
    ("silent", {"name": "A", "language": "en"}, encode(np.zeros(4 * 24_000, np.float32), "wav"), 400, "recording",
     "silent"),
    ("flac bomb", {"name": "A", "language": "en"}, BOMBS["flac-10Hz"](), 400, "recording", "10 Hz is outside"),
    ("too big", {"name": "A", "language": "en"}, b"\0" * (10 * 1024 * 1024 + 1), 413, "recording", "10 MiB"),
    ("no recording", {"name": "A", "language": "en"}, None, 400, "recording", "required"),
    ("no language", {"name": "A"}, b"x", 400, "language", "language"),
    ("bad language", {"name": "A", "language": "english please"}, b"x", 400, "language", ""),
    ("empty name", {"name": " ", "language": "en"}, b"x", 400, "name", "required"),
]


@pytest.mark.parametrize(("case", "fields", "recording", "status", "param", "fragment"), REFUSED_RECORDINGS,
                         ids=[r[0] for r in REFUSED_RECORDINGS])
def test_refused_consent_recordings_leave_nothing(gateway: Server, case: str, fields: dict, recording: bytes | None,
                                                  status: int, param: str, fragment: str) -> None:
    files = {"recording": ("consent.wav", recording, "audio/wav")} if recording is not None else None
    response = httpx.post(gateway.v1 + "/audio/voice_consents", data=fields, files=files, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"})
    error = error_of(response)
    assert (response.status_code, error["param"]) == (status, param), error
    assert fragment in error["message"]
    assert consent_ids(gateway) == [] and hidden_entries(voices_dir(gateway)) == []


def test_an_unknown_consent_is_named_and_nothing_is_saved(gateway: Server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).audio.voices.create(name="Nobody Agreed", consent="cons_0123456789abcdef01234567",
                                            audio_sample=("n.wav", encode(speechlike(4), "wav")))
    assert refused.value.body["param"] == "consent" and "no consent recording" in refused.value.body["message"]
    assert not (voices_dir(gateway) / "nobody-agreed").exists() and hidden_entries(voices_dir(gateway)) == []


def test_require_consent(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    server = start_server(tmp_path, "--engine", "qwen", "--qwen-base", str(checkpoints["base"]), "--require-consent")
    try:
        sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
        clip = encode(speechlike(4, seed=3), "wav")
        for consent in ("", "cons_0123456789abcdef01234567"):
            refused = httpx.post(server.v1 + "/audio/voices", data={"name": "Ada", "consent": consent,
                                                                    "ref_text": "Some words."},
                                 files={"audio_sample": ("a.wav", clip)}, timeout=60)
            assert refused.status_code == 400 and error_of(refused)["param"] == "consent", refused.text
        inline = httpx.post(server.v1 + "/audio/speech", timeout=60, json={
            "model": "tts-1", "voice": "alloy", "input": "Hi.", "ref_audio": base64.b64encode(clip).decode()})
        assert inline.status_code == 400 and "--require-consent" in error_of(inline)["message"]
        assert error_of(inline)["param"] == "ref_audio"
        chatterbox = httpx.post(server.url + "/api/voices/upload", files={"file": ("bob.wav", clip)}, timeout=60)
        assert chatterbox.status_code == 400 and error_of(chatterbox)["param"] == "consent", chatterbox.text
        consent = sdk.audio.voice_consents.create(name="Ada", language="en-GB", recording=("c.wav", clip))
        voice = sdk.audio.voices.create(name="Ada", audio_sample=("a.wav", clip), consent=consent.id)
        assert voice.id == "ada" and voice.model_dump()["clone_mode"] == "x_vector"
        # The Chatterbox upload takes the same consent as a form field.
        chatterbox = httpx.post(server.url + "/api/voices/upload", data={"consent": consent.id},
                                files={"file": ("bob.wav", clip)}, timeout=60)
        assert chatterbox.status_code == 200 and chatterbox.json()["name"] == "bob", chatterbox.text
    finally:
        server.stop()


def _parallel_uploads(targets: list[Server], names: list[str]) -> list[int]:
    clip = encode(speechlike(3.5, seed=11), "wav")
    barrier = threading.Barrier(len(names))
    statuses: list[int] = []

    def send(server: Server, name: str) -> None:
        barrier.wait()
        statuses.append(httpx.post(server.v1 + "/audio/voices", data={"name": name},
                                   files={"audio_sample": ("v.wav", clip)}, timeout=120).status_code)

    threads = [threading.Thread(target=send, args=(targets[i % len(targets)], name)) for i, name in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(statuses)


def test_max_voices_holds_under_parallel_uploads_in_one_process_and_across_two(
        tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    voices = tmp_path / "voices"
    args = ("--engine", "qwen", "--qwen-base", str(checkpoints["base"]), "--max-voices", "3", "--voices-dir",
            str(voices))
    first = start_server(tmp_path / "a", *args)
    second = start_server(tmp_path / "b", *args)
    try:
        stored = lambda: sorted(p.name for p in voices.iterdir() if p.is_dir() and not p.name.startswith("."))  # noqa: E731
        assert _parallel_uploads([first], [f"One {i}" for i in range(10)]) == [200] * 3 + [403] * 7
        assert len(stored()) == 3 and hidden_entries(voices) == []
        for voice_id in stored():
            assert httpx.delete(first.v1 + f"/audio/voices/{voice_id}", timeout=30).status_code == 200
        statuses = _parallel_uploads([first, second], [f"Two {i}" for i in range(10)])
        # What a failure needs to be understood: the answers, the folder, and what each process logged.
        seen = (statuses, sorted(p.name for p in voices.iterdir()), first.log()[-3000:], second.log()[-3000:])
        assert statuses == [200] * 3 + [403] * 7, seen
        assert len(stored()) == 3 and hidden_entries(voices) == [], seen
        assert 'speech_gateway_limit_hits_total{limit="max_voices"}' in httpx.get(first.url + "/metrics").text
    finally:
        first.stop()
        second.stop()


async def test_one_function_decides_what_a_sample_without_transcript_becomes() -> None:
    """`clone_reference`: a transcript makes an in-context clone; none makes an x-vector clone, unless a speech
    recognizer is given, whose transcript then makes an in-context one (what issue 21's recognizer plugs into)."""
    from app.voices.serving import clone_reference

    clip = speechlike(4)
    heard: list[tuple[int, str]] = []

    async def recognizer(samples: np.ndarray, language: str) -> str | None:
        heard.append((len(samples), language))
        return " What the sample says. " if language == "english" else "  "

    assert await clone_reference(clip, " Words. ", x_vector_only=False, language="auto") == ("Words.", False)
    assert await clone_reference(clip, None, x_vector_only=False, language="auto") == (None, True)
    assert await clone_reference(clip, "Words.", x_vector_only=True, language="auto") == ("Words.", True)
    assert await clone_reference(clip, None, x_vector_only=False, language="english", transcriber=recognizer) == (
        "What the sample says.", False)
    assert await clone_reference(clip, None, x_vector_only=False, language="french", transcriber=recognizer) == (
        None, True)  # it heard nothing: the embedding alone
    assert await clone_reference(clip, "Given.", x_vector_only=False, language="english",
                                 transcriber=recognizer) == ("Given.", False)
    assert heard == [(4 * 24_000, "english"), (4 * 24_000, "french")]  # asked only when no transcript was given


def test_neutral_scripts_follow_the_prompts_language() -> None:
    cases = {"A calm, deep narrator with a warm voice.": "english", "Une voix calme et grave, un peu rauque.": "french",
             "Eine ruhige, tiefe Stimme mit warmem Klang.": "german", "Una voz tranquila y profunda.": "spanish",
             "Una voce calma e profonda, con un tono caldo.": "italian", "Uma voz calma e profunda.": "portuguese",
             "一个温柔、沉稳的男声。": "chinese", "落ち着いた、低い声のナレーター。": "japanese",
             "차분하고 깊은 목소리의 내레이터.": "korean", "Спокойный низкий голос рассказчика.": "russian",
             "Deep.": "english"}
    for prompt, language in cases.items():
        assert written_language(prompt) == language, prompt
    assert set(SCRIPTS) == {"english", "chinese", "japanese", "korean", "german", "french", "spanish", "italian",
                            "portuguese", "russian"}
    assert neutral_script("auto") == SCRIPTS["english"]
