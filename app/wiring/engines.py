"""Builds the engines the settings ask for; the primary engine first."""

from __future__ import annotations

from app.settings import Settings
from engine.base import Engine
from engine.embedded import EmbeddedEngine


def build_engines(settings: Settings) -> list[Engine]:
    embedded = EmbeddedEngine(instances=settings.embedded_instances, max_segment_chars=settings.max_segment_chars)
    if settings.engine == "embedded":
        return [embedded]
    if settings.engine == "qwen":
        from app.wiring.qwen import build_qwen_engine

        # The embedded engine stays available beside Qwen (model "hibari", voice "heart").
        return [build_qwen_engine(settings), embedded]
    raise ValueError(f"unknown engine {settings.engine!r}: use embedded or qwen")
