"""Find and load a Qwen3-TTS-12Hz checkpoint (local folder or Hugging Face id) into a `LoadedModel`.

Nothing is downloaded unless asked: a hub id resolves from the local Hugging Face cache only, and a
missing checkpoint or file raises `engine.errors.Unavailable` naming what is missing. Importing this
module needs neither a GPU nor flash-attn (qwen_tts and torch are imported lazily on load).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Unavailable

if TYPE_CHECKING:
    import torch
    from qwen_tts import Qwen3TTSModel

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second at 24 kHz

# What `Qwen3TTSModel.from_pretrained` reads from a folder (the weights may also be sharded).
_REQUIRED = ("config.json", "generation_config.json", "speech_tokenizer/config.json",
             "speech_tokenizer/preprocessor_config.json")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_TEXT_TOKENIZER = (("tokenizer.json",), ("vocab.json", "merges.txt"))

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


@dataclass
class LoadedModel:
    """A loaded checkpoint and what the engine needs to know about it.

    `model` is the official `qwen_tts.Qwen3TTSModel` (its `.model` the HF module). It is not
    thread-safe: use it from one thread (the StepWorker's) only.
    """

    model: Qwen3TTSModel
    kind: str  # base | custom_voice | voice_design
    size: str  # 0b6 | 1b7
    device: str
    dtype: str  # float32 | bfloat16 | float16
    path: Path
    identity: str  # stable across restarts, changes when the weights change: use in cache keys
    load_seconds: float
    speakers: list[str] = field(default_factory=list)  # lowercase CustomVoice speakers
    languages: list[str] = field(default_factory=list)  # lowercase, including "auto"
    attn: str = "sdpa"

    sample_rate: int = SAMPLE_RATE
    samples_per_frame: int = SAMPLES_PER_FRAME

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def generate_defaults(self) -> dict[str, Any]:
        """The checkpoint's generation_config.json (what the official API falls back to)."""
        return dict(self.model.generate_defaults or {})


def _missing_files(folder: Path) -> list[str]:
    missing = [f for f in _REQUIRED if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in _WEIGHTS):
        missing.append("model.safetensors")
    if not any(all((folder / f).is_file() for f in group) for group in _TEXT_TOKENIZER):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if not (folder / "speech_tokenizer").is_dir() or not any(
        (folder / "speech_tokenizer").glob("*.safetensors")
    ):
        missing.append("speech_tokenizer/model.safetensors")
    return missing


def _check_folder(folder: Path, what: str) -> Path:
    missing = _missing_files(folder)
    if missing:
        raise Unavailable(f"{what} at {folder} is incomplete: missing {', '.join(missing)}")
    return folder


def resolve_checkpoint(path_or_id: str, allow_download: bool = False) -> Path:
    """A local folder as is; a hub id ("Qwen/Qwen3-TTS-12Hz-0.6B-Base") from the local HF cache
    (downloaded only when `allow_download`). Raises `Unavailable` naming what is missing."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        if not local.is_dir():
            raise Unavailable(f"checkpoint {path_or_id} is not a folder")
        return _check_folder(local.resolve(), "checkpoint")
    looks_like_id = path_or_id.count("/") == 1 and not path_or_id.startswith((".", "/", "~"))
    if not looks_like_id:
        raise Unavailable(f"checkpoint folder {path_or_id} does not exist")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with qwen-tts
        raise Unavailable(f"cannot resolve {path_or_id}: huggingface_hub is not installed") from e
    try:
        folder = Path(snapshot_download(path_or_id, local_files_only=not allow_download))
    except Exception as e:  # noqa: BLE001 - every hub failure means the same thing to the caller
        how = "download failed" if allow_download else f"not in the local Hugging Face cache ({HF_HUB_CACHE})"
        raise Unavailable(
            f"model {path_or_id}: {how} ({type(e).__name__}). Fetch it with "
            f"`huggingface-cli download {path_or_id}` or point the engine at a local folder."
        ) from e
    return _check_folder(folder, f"cached snapshot of {path_or_id}")


def checkpoint_identity(folder: Path) -> str:
    """Hash of the configs plus, per weight file, its size, mtime and real name.

    Cheap (no weight bytes are read) and stable across restarts. In a HF cache the weight files are
    symlinks to blobs named by content hash, which then makes the identity content-based.
    """
    h = hashlib.sha256()
    for name in ("config.json", "generation_config.json", "speech_tokenizer/config.json"):
        p = folder / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    weights = sorted(folder.glob("*.safetensors")) + sorted((folder / "speech_tokenizer").glob("*.safetensors"))
    for p in weights:
        st = p.stat()
        real = os.path.basename(os.path.realpath(p))
        h.update(f"{p.relative_to(folder)}|{real}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def default_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


def default_attn(device: str) -> str:
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(path_or_id: str, *, device: str = "cpu", dtype: str | None = None, attn: str | None = None,
               allow_download: bool = False) -> LoadedModel:
    """Load a checkpoint with the official `Qwen3TTSModel.from_pretrained`.

    dtype defaults to bfloat16 on cuda and float32 on cpu; attn to flash_attention_2 on cuda when
    flash-attn is installed, else sdpa. Raises `Unavailable` when the checkpoint is missing or fails
    to load.
    """
    import torch
    from qwen_tts import Qwen3TTSModel

    folder = resolve_checkpoint(path_or_id, allow_download=allow_download)
    dtype_name = _DTYPES.get((dtype or default_dtype(device)).lower())
    if dtype_name is None:
        raise Unavailable(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES.values()))}")
    attn = attn or default_attn(device)
    t0 = time.perf_counter()
    try:
        tts = Qwen3TTSModel.from_pretrained(str(folder), device_map=device, dtype=getattr(torch, dtype_name),
                                            attn_implementation=attn)
    except Exception as e:  # noqa: BLE001 - a broken checkpoint is an unavailable engine, not a crash
        raise Unavailable(f"loading {path_or_id} failed: {type(e).__name__}: {e}") from e
    tts.model.eval()
    load_seconds = time.perf_counter() - t0
    inner = tts.model
    if inner.tokenizer_type != "qwen3_tts_tokenizer_12hz":
        raise Unavailable(f"{path_or_id}: only the 12 Hz tokenizer is supported, not {inner.tokenizer_type}")
    return LoadedModel(
        model=tts,
        kind=str(inner.tts_model_type),
        size=str(inner.tts_model_size),
        device=str(device),
        dtype=dtype_name,
        path=folder,
        identity=checkpoint_identity(folder),
        load_seconds=load_seconds,
        speakers=sorted(str(s).lower() for s in (inner.get_supported_speakers() or [])),
        languages=[str(lang).lower() for lang in (inner.get_supported_languages() or [])],
        attn=attn,
    )
