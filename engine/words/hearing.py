"""The speech recognizer as word timing hears: a sentence's audio in, the words it heard out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.base import TimedWord

from .timer import Hear

if TYPE_CHECKING:
    from engine.asr.service import TranscriptionService


def hearing(transcriber: TranscriptionService) -> Hear:
    """Recognition through `transcriber`: its own slots, never a speech engine's, run off the event loop."""

    async def hear(samples: np.ndarray, sample_rate: int) -> Sequence[TimedWord]:
        # Greedy decoding: the text is known already and only the words' times are used; beam search
        # cost about a quarter more for the same times.
        transcript = await transcriber.transcribe(samples, sample_rate, word_timestamps=True, beam_size=1)
        return [TimedWord(w.word, w.start, w.end) for w in transcript.words]

    return hear
