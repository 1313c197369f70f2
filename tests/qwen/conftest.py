"""Shared Qwen3-TTS fixtures: tiny random checkpoints of the real architecture, built once per session.

`tiny_<kind>_dir` is the folder (loadable by `Qwen3TTSModel.from_pretrained`), `tiny_<kind>_model` the
`LoadedModel` from `engine.qwen.loader.load_model` (float32, CPU, sdpa). The models are shared by every
test of the session: a test that adds hooks (e.g. `force_eos_after`) must remove them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

# Tiny models are all per-op overhead: one thread is as fast when the machine is idle and many
# times faster when other jobs share its two cores (OpenMP barriers stall under contention).
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*flash.attn.*")


def _build(root: Path, kind: str) -> Path:
    from engine.qwen.random_model import write_random_checkpoint

    return write_random_checkpoint(root / kind, kind, "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qwen_tiny")


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_checkpoint_root: Path) -> Path:
    return _build(tiny_checkpoint_root, "base")


@pytest.fixture(scope="session")
def tiny_custom_voice_dir(tiny_checkpoint_root: Path) -> Path:
    """Labelled "1b7" so the official code honours instruct (it drops it on "0b6" CustomVoice)."""
    return _build(tiny_checkpoint_root, "custom_voice")


@pytest.fixture(scope="session")
def tiny_voice_design_dir(tiny_checkpoint_root: Path) -> Path:
    return _build(tiny_checkpoint_root, "voice_design")


def _load(folder: Path):
    from engine.qwen.loader import load_model

    return load_model(str(folder), device="cpu", dtype="float32", attn="sdpa")


@pytest.fixture(scope="session")
def tiny_base_model(tiny_base_dir: Path):
    return _load(tiny_base_dir)


@pytest.fixture(scope="session")
def tiny_custom_voice_model(tiny_custom_voice_dir: Path):
    return _load(tiny_custom_voice_dir)


@pytest.fixture(scope="session")
def tiny_voice_design_model(tiny_voice_design_dir: Path):
    return _load(tiny_voice_design_dir)


@pytest.fixture(scope="session")
def reference_audio() -> tuple[np.ndarray, int]:
    """2 s of a 24 kHz mono voice-like signal (harmonics + noise), for clone prompts."""
    sr = 24_000
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(0)
    wav = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 6)) + 0.02 * rng.standard_normal(t.size)
    return wav.astype(np.float32), sr
