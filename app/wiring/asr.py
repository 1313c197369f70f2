"""Settings → the speech recognizer and its admission (`TranscriptionService`), or None without --asr-model.

Building it loads nothing: the model is found and loaded on the first transcription (or at start with
--preload), so a gateway without faster-whisper installed still starts and speaks.
"""

from __future__ import annotations

from app.settings import Settings
from engine.asr import Recognizer, RecognizerConfig, TranscriptionObserver, TranscriptionService


def recognizer_config(settings: Settings) -> RecognizerConfig | None:
    if not settings.asr_model:
        return None
    return RecognizerConfig(model=settings.asr_model, device=settings.asr_device,
                            compute_type=settings.asr_compute_type, threads=settings.asr_threads,
                            workers=settings.asr_max_concurrent, allow_download=settings.allow_download)


def build_transcriber(settings: Settings, observer: TranscriptionObserver | None = None
                      ) -> TranscriptionService | None:
    config = recognizer_config(settings)
    if config is None:
        return None
    if settings.asr_max_concurrent < 1:
        raise SystemExit("--asr-max-concurrent must be at least 1")
    return TranscriptionService(Recognizer(config), max_concurrent=settings.asr_max_concurrent,
                                max_queue=settings.max_queue, queue_timeout=settings.queue_timeout,
                                observer=observer)
