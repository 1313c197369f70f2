"""Settings → QwenConfig → QwenEngine. Imported only when the Qwen engine is asked for (needs torch)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from app.wiring.qwen_quiet import import_qwen_tts
from engine.cores import usable_cores
from engine.qwen.engine import QwenConfig, QwenEngine
from engine.voice_store import SHIPPED_VOICES_DIR


def torch_threads(settings: Settings, cores: int | None = None) -> int | None:
    """--qwen-threads, else on CPU cores / instances: workers share the cores, and torch's default
    (every core per worker) ran a tiny model 10x slower on a busy 2-core box. None on CUDA: torch's
    CPU threads barely matter there."""
    if settings.qwen_threads:
        return settings.qwen_threads
    if settings.device != "cpu":
        return None
    return max(1, (cores or usable_cores()) // max(1, settings.qwen_instances))


def qwen_config(settings: Settings) -> QwenConfig:
    return QwenConfig(
        base=settings.qwen_base,
        custom_voice=settings.qwen_custom_voice,
        voice_design=settings.qwen_voice_design,
        device=settings.device,
        dtype=settings.dtype,
        attn=settings.attn,
        allow_download=settings.allow_download,
        instances=settings.qwen_instances,
        torch_threads=torch_threads(settings),
        preload=settings.preload,
        first_chunk_frames=settings.first_chunk_frames,
        max_batch=settings.qwen_max_batch,
        cuda_graphs=not settings.no_cuda_graphs,
        blocked_gemm=not settings.no_blocked_gemm,
        max_context=settings.qwen_max_context,
        chunk_frames=settings.chunk_frames,
        voices_dirs=(SHIPPED_VOICES_DIR, Path(settings.voices_dir)),
        prompt_cache_size=settings.prompt_cache_size,
        max_segment_chars=settings.max_segment_chars,
    )


def build_qwen_engine(settings: Settings) -> QwenEngine:
    if not (settings.qwen_base or settings.qwen_custom_voice or settings.qwen_voice_design):
        raise SystemExit("--engine qwen needs at least one of --qwen-base, --qwen-custom-voice, --qwen-voice-design")
    import_qwen_tts(settings.device)
    return QwenEngine(qwen_config(settings))
