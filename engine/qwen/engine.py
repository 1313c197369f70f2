"""QwenEngine: Qwen3-TTS-12Hz behind the `Engine` contract, streaming frame by frame.

One request reads top to bottom:

1. `synthesize` (synchronous, before any audio): pick the model kind the voice needs — a `speaker`
   voice → CustomVoice, a `design` voice → VoiceDesign, a `clone` voice → Base — and refuse what
   the configured models cannot serve (`InvalidRequest` naming the missing flag), an unknown
   language, or empty text. A model that failed to load is `Unavailable`.
2. The stream: load the model kind on first use (once, on its own StepWorker thread), take the
   least-busy instance, get the clone prompt from the `ClonePromptCache`, then run every sentence
   segment through `stream_audio` as one StepWorker stream: one frame per step, so closing the
   iterator, a deadline, or shutdown stops the work within a frame.

Runaway guard: each segment gets a frame budget from its length (`frame_budget`), capped by the
request's `max_new_tokens`; generation stops there even if the model never emits EOS.

Nothing here reads the environment or imports torch/qwen_tts at import time: the gateway can import
`QwenConfig` without the Qwen extras installed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.base import SAMPLE_RATE, AudioChunk, EngineStatus, SegmentEnd, SynthesisRequest, Voice
from engine.errors import DeadlineExceeded, InvalidRequest, SpeechError, Unavailable
from engine.text import split_sentences
from engine.voice_store import SHIPPED_VOICES_DIR, VoiceStore
from engine.worker import StepWorker

from .custom_voices import CloneVoices, InlineVoice, reference_clip
from .model_kinds import KINDS, MODEL_FLAG, MODEL_LABEL, VOICE_KIND_TO_MODEL
from .voices import DEFAULT_VOICE, qwen_voices, speaker_voices

log = logging.getLogger(__name__)

LANGUAGES = ("auto", "chinese", "english", "german", "italian", "portuguese", "spanish", "japanese", "korean",
             "french", "russian")  # fmt: skip
_ISO_LANGUAGES = {"zh": "chinese", "en": "english", "de": "german", "it": "italian", "pt": "portuguese",
                  "es": "spanish", "ja": "japanese", "ko": "korean", "fr": "french", "ru": "russian"}  # fmt: skip
# Scripts spoken at few characters per second (CJK ideographs, kana, hangul) need more frames each.
# transformers' from_pretrained patches torch.nn.Module globally while it builds a model (empty-weight
# init): two loads at once on different threads break each other ("Cannot copy out of meta tensor").
_LOAD_LOCK = threading.Lock()
_WIDE_CHARS = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True, kw_only=True)
class QwenConfig:
    """Everything the Qwen3 engine is told; built by the app from its settings (no env reads here).

    base / custom_voice / voice_design: a local checkpoint folder or a Hugging Face id (resolved
    from the local HF cache unless `allow_download`); None leaves that model kind out.
    dtype None: bfloat16 on cuda, float32 on cpu. attn None: flash-attn on cuda if installed, else sdpa.
    instances: model copies (one StepWorker each) per configured kind.
    torch_threads: if set, `torch.set_num_threads` at start (process-wide): cores / instances avoids
    OpenMP teams fighting over cores, which on a busy CPU slows small models down many times.
    preload: load and warm up every configured model in `start()`; otherwise on first use.
    voices_dirs: voice folders in override order; the last one is the user's (writable) folder.
    cache_dir: the disk clone-prompt cache; None → `<last voices dir>/.prompt-cache` (memory only
    when there is no voices dir either).
    Frame budget per segment: max(min_segment_frames, text units × frames_per_char) capped at
    max_segment_frames, where a CJK/kana/hangul character counts `wide_char_weight` units.
    max_batch / cuda_graphs / max_context / prefill_tokens / prefill_rows / prefix_cache: the
    continuous-batching scheduler (`scheduler.FrameScheduler`, one per instance) and its CUDA graphs.
    """

    base: str | None = None
    custom_voice: str | None = None
    voice_design: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    attn: str | None = None
    allow_download: bool = False
    instances: int = 1
    torch_threads: int | None = None
    preload: bool = False
    first_chunk_frames: int = 2
    chunk_frames: int = 8
    voices_dirs: tuple[Path, ...] = (SHIPPED_VOICES_DIR,)
    cache_dir: Path | None = None
    prompt_cache_size: int = 32
    max_segment_chars: int = 300
    frames_per_char: float = 2.0
    wide_char_weight: float = 2.0
    min_segment_frames: int = 24
    max_segment_frames: int = 1500  # 2 minutes of audio for one sentence is a runaway by any measure
    max_batch: int | None = None  # rows per model instance in one frame step; None: 32 on CUDA, 8 on CPU
    cuda_graphs: bool = True  # capture the frame steps per batch-size bucket on CUDA
    blocked_gemm: bool = True  # CPU float32: batched steps' GEMMs as weight-block batches (cpu_gemm.py)
    max_context: int = 2048  # CUDA: cache positions per row (prompt + frames); CPU grows as needed
    # New prompt positions prefilled per iteration, for as many waiting rows as fit (the first always joins;
    # prefill_rows caps the rows, None: free slots). None: 1024 on CUDA (about a frame step's time), 512 on
    # CPU, where a prefill is mostly one read of the weights and each extra frame step costs more than
    # prefilling a few prompts together (4 cold 0.6B prompts: together 2.3 s to first audio, one per step
    # 3.0 s median, 4.9 s for the last, and 20% less audio per second).
    prefill_tokens: int | None = None
    prefill_rows: int | None = None
    prefix_cache: int = 16  # voice prefixes (talker cache of a prompt's voice-only positions) kept per instance

    def batch_size(self) -> int:
        return self.max_batch or (32 if self.device.startswith("cuda") else 8)

    def prefill_budget(self) -> int:
        return self.prefill_tokens or (1024 if self.device.startswith("cuda") else 512)

    def sources(self) -> dict[str, str]:
        """The configured model kinds and their checkpoint folder or hub id."""
        return {k: v for k in KINDS if (v := getattr(self, k))}

    def prompt_cache_dir(self) -> Path | None:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return Path(self.voices_dirs[-1]) / ".prompt-cache" if self.voices_dirs else None


def frame_budget(text: str, config: QwenConfig, max_new_tokens: int | None = None) -> int:
    """The most frames one segment may generate: enough for slow speech, far below a runaway.

    `max_new_tokens` keeps the official meaning (N gives at most N - 1 frames) and only lowers it.
    """
    wide = len(_WIDE_CHARS.findall(text))
    units = len(text) - wide + wide * config.wide_char_weight
    budget = min(config.max_segment_frames, max(config.min_segment_frames, math.ceil(units * config.frames_per_char)))
    return max(1, min(budget, max_new_tokens - 1)) if max_new_tokens else budget


def normalize_language(language: str | None) -> str:
    """A Qwen language name from a name or an ISO/BCP-47 code ("en", "en-US"); InvalidRequest if unknown."""
    lang = (language or "auto").strip().lower().replace("_", "-")
    lang = _ISO_LANGUAGES.get(lang.split("-")[0], lang) if len(lang.split("-")[0]) == 2 else lang
    if lang not in LANGUAGES:
        raise InvalidRequest(f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}",
                             param="language")
    return lang


@dataclass(eq=False)
class _ModelPool:
    """The instances of one model kind: one StepWorker thread and one loaded model per instance."""

    kind: str
    source: str
    workers: list[StepWorker]
    models: list[Any] = field(default_factory=list)  # LoadedModel per worker once loaded
    schedulers: list[Any] = field(default_factory=list)  # FrameScheduler per worker once loaded
    error: str = ""
    loads: int = 0  # load_model calls made (a test reads it: concurrent first requests load once)
    _task: asyncio.Task | None = None

    @property
    def loaded(self) -> bool:
        return bool(self.models) and len(self.models) == len(self.workers)

    async def ensure_loaded(self, config: QwenConfig) -> None:
        if self.loaded:
            return
        if self.error:
            raise Unavailable(self.error)
        if self._task is None:
            self._task = asyncio.ensure_future(self._load_all(config))
            # Retrieve a failure even if every waiter went away (it is kept in self.error).
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        # shield: a request that goes away must not abort a load other requests wait for.
        await asyncio.shield(self._task)

    async def _load_all(self, config: QwenConfig) -> None:
        from .loader import load_model

        def load() -> Any:
            self.loads += 1
            with _LOAD_LOCK:
                return load_model(self.source, device=config.device, dtype=config.dtype, attn=config.attn,
                                  allow_download=config.allow_download)

        label = MODEL_LABEL[self.kind]
        try:
            # Each instance loads on the worker thread that will own it (one at a time, see _LOAD_LOCK).
            models = await asyncio.gather(*(w.call(load) for w in self.workers))
        except Exception as e:  # noqa: BLE001 - any load failure makes this kind unavailable
            reason = e.message if isinstance(e, SpeechError) else f"{type(e).__name__}: {e}"
            self.error = f"the Qwen3 {label} model ({self.source}) failed to load: {reason}"
            log.error("%s", self.error)
            raise Unavailable(self.error) from e
        for m in models:
            if m.kind != self.kind:
                self.error = f"{self.source} is a {MODEL_LABEL.get(m.kind, m.kind)} model, not {label}"
                raise Unavailable(self.error)
        from .scheduler import FrameScheduler

        self.schedulers = [FrameScheduler(w, m, max_batch=config.batch_size(), first_chunk_frames=config.first_chunk_frames,
                                          chunk_frames=config.chunk_frames, prefill_rows=config.prefill_rows,
                                          prefill_tokens=config.prefill_budget(), prefix_cache=config.prefix_cache,
                                          cuda_graphs=config.cuda_graphs, context=config.max_context,
                                          blocked_gemm=config.blocked_gemm)
                           for w, m in zip(self.workers, models, strict=True)]
        self.models = list(models)
        log.info("loaded Qwen3 %s model %s x%d in %.1fs", label, self.source, len(models),
                 sum(m.load_seconds for m in models))

    def pick(self) -> tuple[StepWorker, Any, Any]:
        """The least-busy instance: its worker, model and scheduler (calls never overlap on a model)."""
        i = min(range(len(self.workers)), key=lambda j: len(self.schedulers[j].running) + self.schedulers[j].waiting)
        return self.workers[i], self.models[i], self.schedulers[i]


class QwenEngine:
    """Qwen3-TTS-12Hz (Base, CustomVoice, VoiceDesign) as a streaming `Engine` named "qwen"."""

    name = "qwen"
    sample_rate = SAMPLE_RATE

    def __init__(self, config: QwenConfig):
        self.config = config
        # The default admission limit (see `Engine`): as many streams as one model kind's instances can step
        # together, so a GPU's 32-row batch is not left to 4 admitted streams.
        self.stream_slots = config.batch_size() * max(1, config.instances)
        self.store = VoiceStore(config.voices_dirs, engine=self.name)
        self.prompts: Any = None  # ClonePromptCache, created in start() (it imports torch)
        self.pools: dict[str, _ModelPool] = {}
        self._unresolved: dict[str, str] = {}
        self._started = False
        self.graph_reports: dict[str, list[dict]] = {}  # per kind, per instance: what warm-up captured
        self.clones = CloneVoices(self)  # inline clones, prompts prepared ahead / forgotten on delete
        self.voice_maker = self.clones  # the `engine.base.VoiceMaker` the voice endpoints use

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Check that every configured checkpoint resolves; load and warm up now if `preload`."""
        from .loader import resolve_checkpoint
        from .prompts import ClonePromptCache

        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        self.prompts = ClonePromptCache(self.config.prompt_cache_dir(), self.config.prompt_cache_size)
        await self.clones.start()
        for kind, source in self.config.sources().items():
            try:
                await asyncio.to_thread(resolve_checkpoint, source, self.config.allow_download)
            except SpeechError as e:
                self._unresolved[kind] = f"the Qwen3 {MODEL_LABEL[kind]} checkpoint cannot be used: {e.message}"
                log.error("%s", self._unresolved[kind])
                continue
            workers = [StepWorker(f"qwen-{kind}-{i}") for i in range(max(1, self.config.instances))]
            self.pools[kind] = _ModelPool(kind, source, workers)
        self._started = True
        if self.config.preload:
            await asyncio.gather(*(self._warm_up(kind) for kind in self.pools), return_exceptions=True)

    async def _warm_up(self, kind: str) -> None:
        """Load, then synthesize a few frames so first-request costs (allocations, prompt) are paid now."""
        pool = self.pools[kind]
        await pool.ensure_loaded(self.config)
        # Batch buffers (and CUDA graphs) now, on each instance's own thread.
        self.graph_reports[kind] = await asyncio.gather(*(w.call(s.warm_up) for w, s in
                                                          zip(pool.workers, pool.schedulers, strict=True)))
        candidates = [v for v in self.voices() if VOICE_KIND_TO_MODEL.get(v.kind) == kind]
        if not candidates:
            return
        # The default voice first: warming up computes (and caches) the clone prompt most requests use.
        voice = min(candidates, key=lambda v: DEFAULT_VOICE not in (v.id, *v.aliases))
        from engine.base import SamplingParams

        request = SynthesisRequest(text="Hello.", voice=voice, seed=0, sampling=SamplingParams(max_new_tokens=4))
        try:
            async for _ in self.synthesize(request):
                pass
        except SpeechError as e:
            log.warning("warm-up of the Qwen3 %s model failed: %s", MODEL_LABEL[kind], e.message)

    async def close(self) -> None:
        await self.clones.close()
        pools, self.pools = self.pools, {}
        self._started = False
        workers = [w for p in pools.values() for w in p.workers]
        await asyncio.gather(*(asyncio.to_thread(w.close) for w in workers))

    # -- what the gateway reads ----------------------------------------------------------------
    def status(self) -> EngineStatus:
        sources = self.config.sources()
        problems = list(self._unresolved.values()) + [p.error for p in self.pools.values() if p.error]
        if not sources:
            problems.append("no Qwen3 checkpoint configured (--qwen-base, --qwen-custom-voice, --qwen-voice-design)")
        elif not self._started:
            problems.append("not started")
        loaded = tuple(k for k, p in self.pools.items() if p.loaded)
        details: dict[str, object] = {
            "configured": sources,
            "device": self.config.device,
            "dtype": self.config.dtype or ("bfloat16" if self.config.device.startswith("cuda") else "float32"),
            "instances": self.config.instances,
            "load_seconds": {k: round(sum(m.load_seconds for m in p.models), 3) for k, p in self.pools.items() if p.loaded},
            "workers": {k: [w.snapshot() for w in p.workers] for k, p in self.pools.items()},
            # Per kind and instance, what warm-up built: CUDA graph buckets and capture time, or none.
            "batching": {"max_batch": self.config.batch_size(), "prefill_tokens": self.config.prefill_budget(),
                         "prefill_rows": self.config.prefill_rows or self.config.batch_size(),
                         "graphs": self.graph_reports,
                         "rows": {k: [{"running": len(s.running), "waiting": s.waiting} for s in p.schedulers]
                                  for k, p in self.pools.items()},
                         "voice_prefixes": {k: [{"entries": len(s.prefixes), "bytes": s.prefix_bytes,
                                                 "hits": s.stats.prefix_hits} for s in p.schedulers]
                                            for k, p in self.pools.items()}},
        }
        if self.prompts is not None:
            details["prompt_cache"] = dict(vars(self.prompts.stats), entries=len(self.prompts))
        return EngineStatus(name=self.name, ready=not problems, reason="; ".join(problems), loaded=loaded,
                            details=details)

    def metrics_snapshot(self) -> dict[str, float]:
        """Numbers for /metrics (see `engine.base.Engine`): scheduler counters summed, cache, loads."""
        numbers: dict[str, float] = {"loaded_models": float(sum(len(p.models) for p in self.pools.values()))}
        loads = [m.load_seconds for p in self.pools.values() for m in p.models]
        if loads:
            numbers["model_load_seconds"] = loads[-1]
        numbers.update(self._scheduler_numbers())
        numbers["active_streams"] = numbers["running_rows"] + numbers["waiting_rows"]
        if self.prompts is not None:
            stats = self.prompts.stats
            numbers["prompt_cache_hits_total"] = float(stats.memory_hits + stats.disk_hits + stats.joined)
            numbers["prompt_cache_misses_total"] = float(stats.computed)
            numbers["prompt_compute_seconds_total"] = stats.compute_seconds
            numbers["prompt_cache_entries"] = float(len(self.prompts))
        return numbers

    def voices(self) -> list[Voice]:
        kinds = self.config.sources()
        return qwen_voices(self.store.voices(), base="base" in kinds, custom_voice="custom_voice" in kinds,
                           voice_design="voice_design" in kinds)

    def explain_unknown_voice(self, name: str) -> str | None:
        """Why a voice this engine knows is not listed: the model it needs is not configured."""
        configured = self.config.sources()
        known = [*speaker_voices(), *self.store.voices()]
        for voice in known:
            kind = VOICE_KIND_TO_MODEL.get(voice.kind)
            if kind and kind not in configured and name in (voice.id.lower(), voice.name.lower()):
                return f"voice {voice.id!r} needs a {MODEL_LABEL[kind]} model ({MODEL_FLAG[kind]}), which is not configured"
        return None

    # -- synthesis -----------------------------------------------------------------------------
    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        """Validate now (raising InvalidRequest / Unavailable before any audio), then stream."""
        voice = request.voice
        kind = VOICE_KIND_TO_MODEL.get(voice.kind)
        if voice.engine != self.name or kind is None:
            raise InvalidRequest(f"voice {voice.id!r} is not a Qwen3 voice (engine {voice.engine!r})", param="voice")
        if kind not in self.config.sources():
            raise InvalidRequest(
                f"voice {voice.id!r} needs a {MODEL_LABEL[kind]} model ({MODEL_FLAG[kind]}), which is not configured",
                param="voice",
            )
        if kind in self._unresolved:
            raise Unavailable(self._unresolved[kind])
        if not self._started or kind not in self.pools:
            raise Unavailable("the Qwen3 engine is not started", retry_after=2)
        pool = self.pools[kind]
        if pool.error:
            raise Unavailable(pool.error)
        if voice.kind == "clone" and not voice.ref_audio and not isinstance(voice, InlineVoice):
            raise InvalidRequest(f"clone voice {voice.id!r} has no reference audio", param="voice")
        language = normalize_language(request.language)
        segments = split_sentences(request.text, self.config.max_segment_chars)
        if not segments:
            raise InvalidRequest("input text is empty", param="input")
        return self._stream(request, pool, language, segments)

    def _instruct(self, request: SynthesisRequest) -> str | None:
        voice, extra = request.voice, (request.instructions or "").strip()
        if voice.kind == "design":
            return " ".join(p for p in ((voice.description or "").strip(), extra) if p)
        if voice.kind == "clone":
            if extra:  # Base models take no instruct; OpenAI ignores instructions on tts-1 the same way
                log.debug("request %s: instructions ignored for clone voice %s", request.request_id, voice.id)
            return None
        return extra or None

    async def _stream(
        self, request: SynthesisRequest, pool: _ModelPool, language: str, segments: list[str]
    ) -> AsyncIterator[AudioChunk | SegmentEnd]:
        from .scheduler import SentenceDone, StreamJob
        from .streaming import GenerationParams, prepare_inputs

        await pool.ensure_loaded(self.config)
        if request.expired():
            raise DeadlineExceeded("synthesis passed its deadline before it started")
        worker, loaded, scheduler = pool.pick()
        voice, sampling, cfg = request.voice, request.sampling, self.config
        prompt = await self._clone_prompt(voice, loaded, worker) if voice.kind == "clone" else None
        speaker = (voice.speaker or voice.id) if voice.kind == "speaker" else None
        instruct = self._instruct(request)
        # The checkpoint's generation_config.json, overridden by what the request sets (None = unset).
        knobs = {k: getattr(sampling, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty", "do_sample",
                                                "min_new_tokens")}
        params = [GenerationParams.for_model(loaded, **knobs, max_frames=frame_budget(t, cfg, sampling.max_new_tokens))
                  for t in segments]  # validated here, so a bad knob fails before any audio

        def prepare(i: int) -> Any:  # on the worker thread, when sentence i joins the batch
            return prepare_inputs(loaded, text=segments[i], language=language, speaker=speaker, instruct=instruct,
                                  voice_clone_prompt=prompt)

        job = StreamJob(sentences=len(segments), prepare=prepare, params=params, seed=request.seed,
                        priority=request.priority, deadline=request.deadline, request_id=request.request_id,
                        marks=request.segment_marks)
        frames = scheduler.submit(job)
        try:
            async for samples in frames:
                if isinstance(samples, SentenceDone):
                    yield SegmentEnd(samples.index, segments[samples.index])  # no word timing of its own
                    continue
                yield AudioChunk(np.asarray(samples, dtype=np.float32), SAMPLE_RATE)
        finally:
            await frames.aclose()  # type: ignore[attr-defined]  # takes the row out of the batch

    def _scheduler_numbers(self) -> dict[str, float]:
        # Requests: started/finished/cancelled/failed/deadline_exceeded; steps: decode, prefill, graph vs eager.
        counters = ("started", "finished", "cancelled", "failed", "deadline_exceeded", "decode_steps", "prefills",
                    "graph_replays", "eager_steps", "decode_seconds", "prefill_seconds", "prefill_tokens",
                    "prefix_hits", "prefix_tokens_saved")
        numbers = {"running_rows": 0.0, "waiting_rows": 0.0, "voice_prefix_bytes": 0.0,
                   **{f"{k}_total": 0.0 for k in counters}}
        for pool in self.pools.values():
            for scheduler in pool.schedulers:
                numbers["running_rows"] += len(scheduler.running)
                numbers["waiting_rows"] += scheduler.waiting
                numbers["voice_prefix_bytes"] += scheduler.prefix_bytes
                for key in counters:
                    numbers[f"{key}_total"] += float(getattr(scheduler.stats, key))
        return numbers

    def metrics_histograms(self) -> dict[str, tuple[tuple[int, ...], list[int], float]]:
        """Rows per batched decode step: (bucket upper bounds, counts per bucket, sum), summed over instances."""
        from .scheduler import ROW_BUCKETS

        counts, total = [0] * len(ROW_BUCKETS), 0.0
        for pool in self.pools.values():
            for scheduler in pool.schedulers:
                counts = [a + b for a, b in zip(counts, scheduler.stats.rows_per_step, strict=True)]
                total += scheduler.stats.rows_sum
        return {"decode_rows_per_step": (ROW_BUCKETS, counts, total)}

    async def _clone_prompt(self, voice: Voice, loaded: Any, worker: StepWorker) -> Any:
        # An inline clone's prompt stays in memory: one-off requests must not grow the disk cache.
        return await self.prompts.get(loaded, await reference_clip(voice), worker.call,
                                      persist=not isinstance(voice, InlineVoice))
