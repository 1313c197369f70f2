"""Clone voices made while the gateway runs: inline clones, prompts prepared ahead, prompts forgotten.

- `InlineVoice`: a clone voice built for one request from audio the client sent (`ref_audio` on the
  speech endpoint). Its samples travel with it; nothing is written to the voices folder, and its
  prompt is cached in memory only (see `ClonePromptCache`).
- `CloneVoices.prepare` / `prepare_soon`: compute a new voice's clone prompt before anyone asks, so
  the first request with an uploaded voice costs what any later one costs. `prepare_soon` runs in
  the background and only when the Base model is already loaded: an upload must not start a
  multi-gigabyte model load nobody asked for (the first request pays it, as it would anyway).
- `CloneVoices.forget`: drop a deleted voice's prompts from memory and disk.

A stored voice and an inline clip with the same samples and transcript share one cache key, as
long as both went through the same 16-bit reference WAV (`quantize_reference`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.base import SAMPLE_RATE, Voice
from engine.errors import EngineFailure, InvalidRequest, VoiceNotFound
from engine.voice_store import decode_wav, encode_wav, read_reference
from engine.work_folders import clean_stale_entries

from .model_kinds import MODEL_FLAG
from .voices import OPENAI_VOICES, SPEAKERS

if TYPE_CHECKING:
    from .prompts import ReferenceClip

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, eq=False)
class InlineVoice(Voice):
    """A clone voice for one request; `samples` is the cleaned 24 kHz reference (never saved)."""

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def quantize_reference(audio: np.ndarray) -> np.ndarray:
    """The samples exactly as a stored voice's reference.wav gives them back (16-bit PCM)."""
    return decode_wav(encode_wav(audio))[0]


async def reference_clip(voice: Voice) -> ReferenceClip:
    """The reference a clone voice's prompt is computed from (and keyed by)."""
    from .prompts import ReferenceClip

    if isinstance(voice, InlineVoice):
        audio, sr = voice.samples, SAMPLE_RATE
    else:
        try:
            audio, sr = await asyncio.to_thread(read_reference, voice.ref_audio)
        except FileNotFoundError:
            # Deleted between the lookup and now: the voice is gone, say so rather than fail.
            raise VoiceNotFound(f"voice {voice.id!r} was deleted") from None
        except (OSError, ValueError) as e:
            raise EngineFailure(f"reference audio of voice {voice.id!r} cannot be read: {e}") from e
    return ReferenceClip(audio, sr, voice.ref_text, voice.x_vector_only)


class CloneHost(Protocol):
    """What `CloneVoices` uses of the engine that owns it (the QwenEngine; not imported: it imports this)."""

    name: str
    config: Any  # QwenConfig: voices_dirs, sources()
    store: Any  # VoiceStore: the saved voices
    pools: dict[str, Any]  # model kind -> its worker pool
    prompts: Any  # ClonePromptCache | None


class CloneVoices:
    """The engine's clone voices beyond the stored ones; owns the background prompt computations.

    The Qwen engine's `voice_maker` (`engine.base.VoiceMaker`): what the gateway's voice endpoints use.
    """

    speaker_ids = frozenset(s.id for s in SPEAKERS)
    reserved_names = frozenset({*OPENAI_VOICES, *(s.id for s in SPEAKERS), *(s.name.casefold() for s in SPEAKERS)})

    def __init__(self, engine: CloneHost):
        self.engine = engine
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def require(self, *, design: bool, param: str | None = None) -> None:
        """InvalidRequest naming the flags to start with unless the models (Base; VoiceDesign too to
        design) and a writable voices folder are there."""
        needed = ("voice_design", "base") if design else ("base",)
        have = self.engine.config.sources()
        missing = [MODEL_FLAG[k] for k in needed if k not in have]
        if missing or self.user_dir is None:
            what = "designing a voice needs the Qwen3 VoiceDesign and Base models" if design else \
                "cloning a voice needs the Qwen3 Base model"
            flags = " ".join(f"{flag} <checkpoint>" for flag in missing or [MODEL_FLAG[k] for k in needed])
            raise InvalidRequest(f"{what}: start the server with --engine qwen {flags} (and --voices-dir)",
                                 param=param)

    def stored_voices(self) -> list[Voice]:
        return self.engine.store.voices()

    def stored_voice(self, voice_id: str) -> Voice | None:
        return self.engine.store.get(voice_id)

    @property
    def user_dir(self) -> Path | None:
        """The writable voices folder (the last of `voices_dirs`), or None when only shipped voices exist."""
        from engine.voice_store import SHIPPED_VOICES_DIR

        dirs = self.engine.config.voices_dirs
        return Path(dirs[-1]) if dirs and Path(dirs[-1]).resolve() != SHIPPED_VOICES_DIR else None

    async def start(self) -> None:
        """Remove what a crash left half-written in the user's voices folder (see `work_folders`)."""
        if self.user_dir is not None:
            await asyncio.to_thread(clean_stale_entries, self.user_dir)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def inline(self, audio: np.ndarray, *, ref_text: str | None, x_vector_only: bool = False,
               language: str = "auto") -> InlineVoice:
        """A clone voice from cleaned 24 kHz samples, for one request. InvalidRequest without a Base model."""
        if "base" not in self.engine.config.sources():
            raise InvalidRequest(f"inline cloning (ref_audio) needs the Qwen3 Base model: start the server with "
                                 f"--engine qwen {MODEL_FLAG['base']} <checkpoint>", param="ref_audio")
        samples = quantize_reference(audio)
        tag = hashlib.sha256(samples.tobytes() + (ref_text or "").encode()).hexdigest()[:12]
        return InlineVoice(id=f"inline-{tag}", name="inline clone", kind="clone", engine=self.engine.name,
                           language=language, ref_text=ref_text, x_vector_only=x_vector_only, source="inline",
                           samples=samples)

    async def prepare(self, voice: Voice, *, load: bool = True) -> bool:
        """Compute (or find) `voice`'s clone prompt now; False when there is no Base model to do it
        with, or it is not loaded and `load` is False. Raises what a synthesis would (Unavailable...)."""
        pool = self.engine.pools.get("base")
        if pool is None or self.engine.prompts is None or not (pool.loaded or load):
            return False
        await pool.ensure_loaded(self.engine.config)
        worker, loaded, _ = pool.pick()  # (worker, model, scheduler)
        await self.engine.prompts.get(loaded, await reference_clip(voice), worker.call)
        return True

    def prepare_soon(self, voice: Voice) -> None:
        """`prepare(voice, load=False)` in the background; a failure is logged and the first request
        computes the prompt instead. A request arriving meanwhile joins the computation in flight."""

        async def run() -> None:
            try:
                if await self.prepare(voice, load=False):
                    log.info("clone prompt of voice %r ready", voice.id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - an optimisation failed; the request path will retry
                log.warning("could not prepare the clone prompt of voice %r: %s", voice.id, e)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def digest(self, voice: Voice) -> str:
        """The prompt-cache digest of a clone voice (read it before deleting the voice's files)."""
        return (await reference_clip(voice)).digest()

    async def forget(self, digest: str) -> int:
        """Drop every cached prompt of the reference with `digest`, in memory and on disk."""
        if self.engine.prompts is None:
            return 0
        return await self.engine.prompts.evict(digest)
