"""Random checkpoints load like published ones, through qwen_tts and through our loader."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import Unavailable
from engine.qwen.loader import load_model, resolve_checkpoint
from engine.qwen.random_model import SPEAKERS, force_eos_after, write_random_checkpoint

LANGUAGES = {"auto", "chinese", "english", "german", "italian", "portuguese", "spanish", "japanese", "korean",
             "french", "russian"}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_official_from_pretrained_loads_and_speaks(tiny_base_dir: Path, reference_audio) -> None:
    from qwen_tts import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(str(tiny_base_dir), device_map="cpu", dtype=torch.float32,
                                        attn_implementation="sdpa")
    assert tts.model.tts_model_type == "base" and tts.model.speaker_encoder is not None
    ids = tts.processor(text="<|im_start|>assistant\n")["input_ids"][0]
    assert len(ids) == 3  # qwen_tts slices prompts at fixed token offsets
    items = tts.create_voice_clone_prompt(reference_audio, ref_text="A reference sentence.")
    assert items[0].ref_code.shape == (25, 16)  # 2 s at 12.5 Hz, 16 codebooks
    with force_eos_after(tts, 5):
        wavs, sr = tts.generate_voice_clone("Hello there.", language="english", voice_clone_prompt=items,
                                            max_new_tokens=40, do_sample=False, subtalker_dosample=False)
    assert sr == 24000 and wavs[0].shape[0] in (5 * 1920, 5 * 1920 + 1)  # +1: the official ICL cut rounds down
    assert float(np.sqrt(np.mean(wavs[0] ** 2))) > 1e-3  # not the ~1e-8 RMS of the untouched HF init


@pytest.mark.parametrize("kind", ["base", "custom_voice", "voice_design"])
def test_loader_reports_kind_size_speakers(kind: str, request: pytest.FixtureRequest) -> None:
    loaded = request.getfixturevalue(f"tiny_{kind}_model")
    assert loaded.kind == kind
    assert loaded.size == ("0b6" if kind == "base" else "1b7")
    assert loaded.speakers == (sorted(SPEAKERS) if kind == "custom_voice" else [])
    assert set(loaded.languages) == LANGUAGES
    assert (loaded.device, loaded.dtype, loaded.attn) == ("cpu", "float32", "sdpa")
    assert loaded.load_seconds > 0 and len(loaded.identity) == 24
    assert next(loaded.model.model.parameters()).dtype == torch.float32
    assert (loaded.model.model.speaker_encoder is not None) == (kind == "base")


def test_tiny_is_small_and_frames_are_1920_samples(tiny_base_dir: Path, tiny_base_model) -> None:
    size = sum(f.stat().st_size for f in tiny_base_dir.rglob("*") if f.is_file())
    assert size < 10 * 1024 * 1024
    codes = torch.randint(0, 64, (7, 16), generator=torch.Generator().manual_seed(0))
    wavs, sr = tiny_base_model.model.model.speech_tokenizer.decode([{"audio_codes": codes}])
    assert sr == 24000 and wavs[0].shape == (7 * 1920,)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    state = torch.get_rng_state()
    a = write_random_checkpoint(tmp_path / "a", "voice_design", seed=3)
    c = write_random_checkpoint(tmp_path / "c", "voice_design", seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    # Same bytes from another process with another string-hash seed (sets and dicts stay ordered),
    # through the CLI entry point.
    b = tmp_path / "b"
    cli = [sys.executable, "-m", "engine.qwen.random_model", str(b), "--kind", "voice_design", "--seed", "3"]
    subprocess.run(cli, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "12345"},
                   cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert _digest(a) == _digest(b)
    differ = {k for k in _digest(a) if _digest(a)[k] != _digest(c)[k]}
    assert _digest(a).keys() == _digest(c).keys()
    assert differ == {"model.safetensors", "speech_tokenizer/model.safetensors", "random_checkpoint.json"}
    ida = load_model(str(a)).identity
    assert ida == load_model(str(a)).identity  # stable across loads
    assert ida != load_model(str(c)).identity


def test_custom_voice_size_label_and_dialects(tmp_path: Path) -> None:
    folder = write_random_checkpoint(tmp_path / "cv", "custom_voice", size_label="0b6")
    loaded = load_model(str(folder))
    talker = loaded.model.model.config.talker_config
    assert loaded.size == "0b6"
    assert talker.spk_is_dialect["dylan"] == "beijing_dialect" and talker.spk_is_dialect["ryan"] is False
    top = talker.vocab_size - 1024  # every control, language and speaker id sits in the top 1024
    ids = [talker.codec_eos_token_id, talker.codec_bos_id, talker.codec_pad_id, *talker.spk_id.values(),
           *talker.codec_language_id.values()]
    assert all(top <= i < talker.vocab_size for i in ids)


def test_resolve_checkpoint_errors(tmp_path: Path, tiny_voice_design_dir: Path) -> None:
    assert resolve_checkpoint(str(tiny_voice_design_dir)) == tiny_voice_design_dir.resolve()
    with pytest.raises(Unavailable, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(Unavailable, match="not in the local Hugging Face cache"):
        resolve_checkpoint("nobody-here/Qwen3-TTS-12Hz-0.6B-Missing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_voice_design_dir, broken)
    (broken / "model.safetensors").unlink()
    (broken / "speech_tokenizer" / "preprocessor_config.json").unlink()
    with pytest.raises(Unavailable, match="incomplete: missing") as err:
        load_model(str(broken))
    assert "speech_tokenizer/preprocessor_config.json" in str(err.value) and "model.safetensors" in str(err.value)
