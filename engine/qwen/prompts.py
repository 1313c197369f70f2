"""ClonePromptCache: a clone voice's prompt is computed once per model and reused, even after restarts.

A Base model clones a voice from a "voice clone prompt": the reference clip encoded to codec frames
(`ref_code`, ICL mode only) and the speaker embedding (`ref_spk_embedding`). Computing it costs about
0.4 s on a CPU for a 3 s clip, every time; caching it makes a clone request cost what a speaker
request costs.

Keyed by (model identity, sha256 of the decoded reference samples + sample rate + transcript +
x-vector flag): a different checkpoint, clip, transcript or mode is a different prompt. Three tiers:

1. memory: a bounded LRU of prompt items (`max_entries`);
2. disk: `<cache_dir>/<model tag>/<key>.safetensors`, the two tensors plus a JSON metadata header
   (x_vector_only, icl_mode, ref_text, identity), written to a temp file, fsynced and renamed, so
   a crash leaves either the old state or the whole file; a corrupt file is recomputed;
3. compute: on the Base model's own worker thread (never on the event loop, never concurrently with
   a generation on the same instance).

Concurrent first requests for one voice share one computation (single flight); a caller that goes
away does not cancel the computation the others are waiting for.

`persist=False` (inline clones: audio sent with one request) keeps a new prompt in memory only, so
one-off requests cannot grow the disk cache without bound; it still reads the disk, so an inline
clip equal to a stored voice's reference reuses that voice's prompt. `evict(digest)` forgets every
prompt of one reference, in memory and on disk (a deleted voice), after any computation in flight.

Silence padding: 0.5 s of silence is appended to the reference before the prompt is computed.
In ICL mode the model continues the reference's codec frames, and a clip that ends mid-phoneme
leaks that phoneme into the first generated frames; ending the reference on silence makes the
continuation start cleanly (the fix faster-qwen3-tts adopted in its PR #9).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from ..lru import LRU

log = logging.getLogger(__name__)

T = TypeVar("T")
Runner = Callable[[Callable[[], T]], Awaitable[T]]
"""Runs a function on the model's worker thread, e.g. `StepWorker.call`."""

SILENCE_PAD_SECONDS = 0.5
_FORMAT = "1"  # bump when the stored layout or the padding changes: old files are then ignored


class PromptModel(Protocol):
    """What the cache needs of a loaded Base model (`engine.qwen.loader.LoadedModel` fits)."""

    model: Any  # qwen_tts Qwen3TTSModel
    identity: str
    device: Any


@dataclass(frozen=True)
class ReferenceClip:
    """A clone voice's reference: float32 mono samples, their rate, the transcript, the mode."""

    audio: np.ndarray
    sample_rate: int
    ref_text: str | None
    x_vector_only: bool = False

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.audio, dtype=np.float32).tobytes())
        h.update(f"\0{self.sample_rate}\0{int(self.x_vector_only)}\0".encode())
        # In x-vector mode the transcript is unused, so it must not split the cache.
        h.update(b"" if self.x_vector_only else (self.ref_text or "").encode())
        h.update(_FORMAT.encode())
        return h.hexdigest()


@dataclass
class PromptCacheStats:
    computed: int = 0  # prompts computed from reference audio
    memory_hits: int = 0  # served from the in-memory LRU
    disk_hits: int = 0  # loaded from the disk cache (then kept in memory)
    joined: int = 0  # waited for a computation or disk load another request had started
    compute_seconds: float = 0.0


class ClonePromptCache:
    """Voice clone prompts by (model, reference); see the module docstring for the tiers."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, max_entries: int = 32):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.stats = PromptCacheStats()
        self._memory = LRU(max_entries)  # (model, reference) -> VoiceClonePromptItem
        self._inflight: dict[tuple[str, str], asyncio.Task[VoiceClonePromptItem]] = {}

    # Counters under the names tests and /metrics read.
    @property
    def computed(self) -> int:
        return self.stats.computed

    @property
    def memory_hits(self) -> int:
        return self.stats.memory_hits

    @property
    def disk_hits(self) -> int:
        return self.stats.disk_hits

    def __len__(self) -> int:
        return len(self._memory)

    async def get(self, loaded: PromptModel, clip: ReferenceClip, run: Runner, *, persist: bool = True
                  ) -> VoiceClonePromptItem:
        """The prompt for `clip` on `loaded`'s model: from memory, else disk, else computed via `run`
        (and stored on disk when `persist`)."""
        key = (loaded.identity, clip.digest())
        item = self._memory.get(key)
        if item is not None:
            self.stats.memory_hits += 1
            return item
        task = self._inflight.get(key)
        if task is not None:
            self.stats.joined += 1
        else:
            task = asyncio.ensure_future(self._fill(key, loaded, clip, run, persist))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shield: one waiter being cancelled must not cancel the computation the others share.
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # mark it retrieved: the waiters (if any are left) re-raise it themselves

    async def evict(self, digest: str) -> int:
        """Forget every prompt made from the reference with this `ReferenceClip.digest()`, whatever the
        model; returns how many entries (memory and files) went. Waits for computations in flight
        first, so none of them writes the prompt back after the eviction."""
        pending = [task for key, task in self._inflight.items() if key[1] == digest]
        if pending:
            await asyncio.wait(pending)  # never raises their errors, never cancels them
        gone = [key for key in self._memory if key[1] == digest]
        for key in gone:
            del self._memory[key]
        files = list(self.cache_dir.glob(f"*/{digest}.safetensors")) if self.cache_dir is not None else []
        for path in files:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return len(gone) + len(files)

    async def _fill(self, key: tuple[str, str], loaded: PromptModel, clip: ReferenceClip, run: Runner,
                    persist: bool = True):
        path = self._path(key)
        item = await asyncio.to_thread(self._read, path, key[0], loaded.device) if path else None
        if item is not None:
            self.stats.disk_hits += 1
        else:
            t0 = time.perf_counter()
            item = await run(lambda: compute_prompt(loaded.model, clip))
            self.stats.compute_seconds += time.perf_counter() - t0
            self.stats.computed += 1
            if path is not None and persist:
                try:
                    await asyncio.to_thread(_write_atomic, path, _serialize(item, key[0]))
                except OSError as e:  # a read-only or full disk costs a recompute after restart, no more
                    log.warning("could not store clone prompt %s: %s", path, e)
        self._memory.put(key, item)
        return item

    def _path(self, key: tuple[str, str]) -> Path | None:
        if self.cache_dir is None:
            return None
        model_tag = hashlib.sha256(key[0].encode()).hexdigest()[:16]
        return self.cache_dir / model_tag / f"{key[1]}.safetensors"

    @staticmethod
    def _read(path: Path, identity: str, device: Any) -> VoiceClonePromptItem | None:
        if not path.is_file():
            return None
        try:
            return _deserialize(path, identity, device)
        except Exception as e:  # noqa: BLE001 - any damage to the file means: compute it again
            log.warning("ignoring unreadable clone prompt %s: %s", path, e)
            return None


def compute_prompt(model: Any, clip: ReferenceClip) -> VoiceClonePromptItem:
    """Compute one prompt item with the official API, from decoded samples only.

    Only a (float32 mono array, rate) tuple ever reaches qwen_tts: given a string it would fetch a
    URL or base64-decode it itself.
    """
    audio = np.asarray(clip.audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"reference audio must be non-empty mono, got shape {audio.shape}")
    pad = np.zeros(int(round(SILENCE_PAD_SECONDS * clip.sample_rate)), dtype=np.float32)
    padded = np.concatenate([audio, pad])
    with torch.inference_mode():
        items = model.create_voice_clone_prompt(
            ref_audio=(padded, int(clip.sample_rate)),
            ref_text=None if clip.x_vector_only else clip.ref_text,
            x_vector_only_mode=clip.x_vector_only,
        )
    return items[0]


def _serialize(item: VoiceClonePromptItem, identity: str) -> bytes:
    tensors = {"ref_spk_embedding": item.ref_spk_embedding.detach().cpu().contiguous()}
    if item.ref_code is not None:
        tensors["ref_code"] = item.ref_code.detach().cpu().contiguous()
    meta = {
        "format": _FORMAT,
        "identity": identity,
        "x_vector_only": item.x_vector_only_mode,
        "icl_mode": item.icl_mode,
        "ref_text": item.ref_text,
    }
    return save_safetensors(tensors, metadata={"prompt": json.dumps(meta)})


def _deserialize(path: Path, identity: str, device: Any) -> VoiceClonePromptItem | None:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = json.loads((f.metadata() or {})["prompt"])
        if meta.get("format") != _FORMAT or meta.get("identity") != identity:
            return None  # written by another layout or model: treat as absent
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # safe_open is not a Mapping
    ref_code = tensors.get("ref_code")
    return VoiceClonePromptItem(
        ref_code=ref_code.to(device) if ref_code is not None else None,
        ref_spk_embedding=tensors["ref_spk_embedding"].to(device),
        x_vector_only_mode=bool(meta["x_vector_only"]),
        icl_mode=bool(meta["icl_mode"]),
        ref_text=meta["ref_text"],
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)
