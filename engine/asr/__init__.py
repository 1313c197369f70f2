"""Speech recognition: a Whisper recognizer (faster-whisper on CTranslate2), loaded on first use.

`Recognizer` does the work (sync, thread-safe, called from worker threads); `TranscriptionService`
admits it (its own slots, never the speech engines') and runs it off the event loop. Nothing here
imports faster-whisper until a recognizer is first used, so the gateway starts and speaks without it.
"""

from .recognizer import Recognizer, RecognizerConfig, resolve_model
from .service import TranscriptionObserver, TranscriptionService, TranscriptStream
from .transcript import Segment, Transcript, Word

__all__ = ["Recognizer", "RecognizerConfig", "resolve_model", "Segment", "Transcript", "TranscriptStream",
           "TranscriptionObserver", "TranscriptionService", "Word"]
