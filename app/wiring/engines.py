"""Builds the engines the settings ask for; the primary engine first."""

from __future__ import annotations

from app.settings import Settings
from engine.base import Engine
from engine.cores import usable_cores
from engine.embedded import EmbeddedEngine

# Past a few threads the event loop and the GIL (hibari's G2P and DSP are Python and numpy) are the limit.
MAX_EMBEDDED_THREADS = 4


def embedded_threads(settings: Settings, cores: int | None = None) -> int:
    """--embedded-instances, else one synthesis thread per usable core (up to 4) when the embedded engine
    is the primary one, and one beside Qwen, whose torch threads already take the cores."""
    if settings.embedded_instances > 0:
        return settings.embedded_instances
    if settings.engine != "embedded":
        return 1
    return min(MAX_EMBEDDED_THREADS, cores or usable_cores())


def build_engines(settings: Settings) -> list[Engine]:
    embedded = EmbeddedEngine(instances=embedded_threads(settings), max_segment_chars=settings.max_segment_chars)
    if settings.engine == "embedded":
        return [embedded]
    if settings.engine == "qwen":
        from app.wiring.qwen import build_qwen_engine

        # The embedded engine stays available beside Qwen (model "hibari", voice "heart").
        return [build_qwen_engine(settings), embedded]
    raise ValueError(f"unknown engine {settings.engine!r}: use embedded or qwen")
