"""Voice folders on disk: round trip, atomic writes, and bad folders ignored without hiding good ones."""

from __future__ import annotations

import io
import json
import logging
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.qwen.voices import OPENAI_TO_SPEAKER, OPENAI_VOICES, SPEAKERS, qwen_voices
from engine.voice_store import (
    MANIFEST,
    REFERENCE,
    SHIPPED_VOICES_DIR,
    VoiceManifest,
    VoiceStore,
    decode_wav,
    encode_wav,
    read_reference,
    save_voice,
)


def _tone(seconds: float = 1.0, sr: int = 24_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _clone(voice_id: str = "alice", ref_text: str = "Hello there.", **kw) -> VoiceManifest:
    return VoiceManifest(id=voice_id, name=voice_id.title(), kind="clone", ref_text=ref_text, **kw)


def test_clone_round_trip(tmp_path: Path) -> None:
    audio = _tone()
    folder = save_voice(tmp_path, _clone(language="english", aliases=["al"]), audio)
    assert folder == tmp_path / "alice"
    assert sorted(p.name for p in folder.iterdir()) == [REFERENCE, MANIFEST]

    [voice] = VoiceStore([tmp_path]).voices()
    assert (voice.id, voice.kind, voice.language, voice.aliases) == ("alice", "clone", "english", ("al",))
    assert voice.ref_text == "Hello there." and voice.ref_audio == str(folder / REFERENCE)
    assert voice.created_at > 0 and voice.engine == "qwen"
    samples, sr = read_reference(voice.ref_audio)
    assert sr == 24_000 and samples.dtype == np.float32 and samples.shape == audio.shape
    assert np.max(np.abs(samples - audio)) < 1 / 32767 + 1e-6  # 16-bit quantisation only


def test_design_and_speaker_round_trip(tmp_path: Path) -> None:
    save_voice(tmp_path, VoiceManifest(id="calm", name="Calm", kind="design", description="A calm voice."))
    save_voice(tmp_path, VoiceManifest(id="my-ryan", name="Ryan", kind="speaker", speaker="ryan"))
    voices = {v.id: v for v in VoiceStore([tmp_path]).voices()}
    assert voices["calm"].description == "A calm voice." and voices["calm"].ref_audio is None
    assert voices["my-ryan"].speaker == "ryan"


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    save_voice(tmp_path, _clone(), _tone())
    with pytest.raises(FileExistsError):
        save_voice(tmp_path, _clone(), _tone())
    save_voice(tmp_path, _clone(ref_text="Changed."), _tone(0.5), replace=True)
    [voice] = VoiceStore([tmp_path]).voices()
    assert voice.ref_text == "Changed."
    assert [p.name for p in tmp_path.iterdir()] == ["alice"]  # no temp or old folders left behind


def test_save_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ref_text"):
        save_voice(tmp_path, VoiceManifest(id="x", name="X", kind="clone"), _tone())
    with pytest.raises(ValueError, match="reference audio"):
        save_voice(tmp_path, _clone())
    with pytest.raises(ValueError, match="id"):
        save_voice(tmp_path, _clone("../evil"), _tone())
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_incomplete_folders_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_voice(tmp_path, _clone("good"), _tone())
    bad = {
        "no-manifest": {},
        "bad-json": {MANIFEST: b"{not json"},
        "wrong-type": {MANIFEST: json.dumps({"id": "wrong-type", "name": "W", "kind": "robot"}).encode()},
        "id-mismatch": {MANIFEST: json.dumps({"id": "other", "name": "O", "kind": "design", "description": "d"}).encode()},
        "no-wav": {MANIFEST: json.dumps({"id": "no-wav", "name": "N", "kind": "clone", "ref_text": "hi"}).encode()},
        "bad-wav": {
            MANIFEST: json.dumps({"id": "bad-wav", "name": "B", "kind": "clone", "ref_text": "hi"}).encode(),
            REFERENCE: b"RIFF\x00\x00garbage",
        },
        "design-no-text": {MANIFEST: json.dumps({"id": "design-no-text", "name": "D", "kind": "design"}).encode()},
    }
    for name, files in bad.items():
        (tmp_path / name).mkdir()
        for fname, data in files.items():
            (tmp_path / name / fname).write_bytes(data)
    (tmp_path / ".prompt-cache").mkdir()  # hidden folders are not voices and are not even reported
    (tmp_path / "stray-file.txt").write_text("not a folder")

    with caplog.at_level(logging.WARNING, logger="engine.voice_store"):
        voices = VoiceStore([tmp_path]).voices()
    assert [v.id for v in voices] == ["good"]
    reported = caplog.text
    for name in bad:
        assert name in reported
    assert ".prompt-cache" not in reported


def test_later_dirs_override_and_changes_are_seen(tmp_path: Path) -> None:
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    save_voice(shipped, _clone("alice", ref_text="Shipped."), _tone())
    store = VoiceStore([shipped, user])  # the user folder does not exist yet: no error
    assert store.get("alice").ref_text == "Shipped."
    save_voice(user, _clone("alice", ref_text="Mine."), _tone())
    save_voice(user, _clone("bob"), _tone())
    assert store.get("alice").ref_text == "Mine."
    assert [v.id for v in store.voices()] == ["alice", "bob"]


def test_wav_codec_downmixes_and_rejects_garbage() -> None:
    stereo = np.stack([_tone(0.1), -_tone(0.1)], axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    mono, sr = decode_wav(buf.getvalue())
    assert sr == 48_000 and mono.shape == (2400,) and np.max(np.abs(mono)) < 1e-3  # opposite channels cancel
    assert decode_wav(encode_wav(np.array([2.0, -2.0], dtype=np.float32)))[0].tolist() == [32767 / 32768, -32767 / 32768]
    with pytest.raises(ValueError):
        decode_wav(b"definitely not audio")


def test_shipped_voices_are_valid() -> None:
    voices = {v.id: v for v in VoiceStore([SHIPPED_VOICES_DIR]).voices()}
    default = voices["default"]
    assert default.kind == "clone" and default.source == "shipped" and default.ref_text
    samples, sr = read_reference(default.ref_audio)
    assert sr == 24_000 and 4.0 <= len(samples) / sr <= 6.0
    assert np.sqrt(np.mean(samples**2)) > 0.05  # a real, audible clip
    assert any(v.kind == "design" and v.description for v in voices.values())


def test_openai_names_follow_the_configured_models() -> None:
    stored = VoiceStore([SHIPPED_VOICES_DIR]).voices()
    assert set(OPENAI_TO_SPEAKER) == set(OPENAI_VOICES) and set(OPENAI_TO_SPEAKER.values()) == {s.id for s in SPEAKERS}

    def owners(**kinds: bool) -> dict[str, str]:
        return {a: v.id for v in qwen_voices(stored, **kinds) for a in v.aliases}

    everything = owners(base=True, custom_voice=True, voice_design=True)
    assert {n: everything[n] for n in OPENAI_VOICES} == OPENAI_TO_SPEAKER
    assert "default" not in everything  # the shipped clone voice is itself called "default"
    assert set(owners(base=True, custom_voice=False, voice_design=False).values()) == {"default"}
    cv_only = owners(base=False, custom_voice=True, voice_design=False)
    assert cv_only["default"] == OPENAI_TO_SPEAKER["alloy"]
    design_only = owners(base=False, custom_voice=False, voice_design=True)
    assert set(design_only.values()) == {"narrator-design"} and "default" in design_only
    assert qwen_voices(stored, base=False, custom_voice=False, voice_design=False) == []


def test_a_stored_voice_keeps_its_name_over_an_alias(tmp_path: Path) -> None:
    save_voice(tmp_path, _clone("alloy"), _tone())
    stored = VoiceStore([SHIPPED_VOICES_DIR, tmp_path]).voices()
    voices = qwen_voices(stored, base=True, custom_voice=True, voice_design=False)
    assert "alloy" not in next(v for v in voices if v.id == "aiden").aliases
    assert any(v.id == "alloy" and v.kind == "clone" for v in voices)
