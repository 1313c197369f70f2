"""The embedded engine: hibari-tts on the CPU, with the voice that ships inside its wheel.

It makes the gateway speak on any machine with nothing downloaded. Only the bundled voice is used:
hibari fetches its other voices from the network on first use, which must never happen here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from .base import SAMPLE_RATE, AudioChunk, EngineStatus, SegmentEnd, SynthesisRequest, TimedWord, Voice
from .embedded_timing import TimedHibari, spoken_tokens, word_times
from .errors import InvalidRequest, Unavailable
from .text import split_sentences
from .worker import StepWorker

BUNDLED_VOICE = "heart"
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar",
)
VOICE = Voice(
    id="hibari-heart",
    name="Heart (embedded)",
    kind="builtin",
    engine="embedded",
    language="english",
    # OpenAI names reach this voice only when no engine ahead of it in the registry claims them.
    aliases=("heart", "hibari", "default", *OPENAI_VOICES),
    description="American English, female; hibari-tts bundled voice (distilled from Kokoro af_heart)",
)
_LANGUAGES = {"auto", "english", "en", "en-us", "en-gb"}
# A sentence is seconds of audio and the next step ~50-100 ms of CPU: waiting up to 50 ms for the first
# sentence to be sent (StepWorker's first_item_handoff) never leaves a listener without audio.
FIRST_ITEM_HANDOFF_S = 0.05
# Streams admitted per synthesis thread when --max-concurrent is not given. A sentence takes ~1% of its
# playing time on one core, and the worker makes each stream's next sentence by when its audio runs out
# (`pace`), first sentences first: this many listeners stay fed with room to spare on a busy CPU.
STREAMS_PER_INSTANCE = 32


class EmbeddedEngine:
    """hibari-tts behind one StepWorker: one sentence per step, `instances` threads sharing one model.

    The model is loaded once: its ONNX session runs calls from several threads at once, and its G2P
    (~120 MB of lexicons, most of the engine's memory) is only read. So a second thread costs no memory
    and a new request's first sentence waits for whichever thread frees first, not behind one thread's
    queue. `threads` is each call's own ONNX threads: one, since this small model gains little from more
    (a 5 s sentence: 24 ms on one, 19 ms on two) and the cores serve more calls at once instead."""

    name = "embedded"
    sample_rate = SAMPLE_RATE

    def __init__(self, *, instances: int = 1, threads: int = 1, max_segment_chars: int = 300):
        self.instances = max(1, instances)
        self.stream_slots = STREAMS_PER_INSTANCE * self.instances  # see `Engine`: the default admission limit
        self.threads = threads
        self.max_segment_chars = max_segment_chars
        self._voice = VOICE
        self._workers: list[StepWorker] = []
        self._model: TimedHibari | None = None
        self._error = ""
        self._load_seconds = 0.0

    async def start(self) -> None:
        from hibari.voices import voice_path

        try:
            path = voice_path(BUNDLED_VOICE, download_missing=False)
        except Exception as e:  # noqa: BLE001 - reported through status()
            self._error = f"hibari bundled voice unavailable: {e}"
            return
        t0 = time.perf_counter()
        worker = StepWorker("embedded", first_item_handoff=FIRST_ITEM_HANDOFF_S, threads=self.instances)
        self._workers.append(worker)
        await worker.call(lambda: self._load(path))
        self._load_seconds = time.perf_counter() - t0

    def _load(self, path: str) -> None:
        from hibari import Hibari

        tts = Hibari(model=path, threads=self.threads)
        tts.phonemize("Warm up.")  # builds the G2P now, not in the first request
        _ = tts.g2p.oov  # and its lazily loaded unknown-word net, so no two threads race to load it
        self._model = TimedHibari(tts, self.threads)

    @property
    def times_words(self) -> bool:
        """Every `SegmentEnd` carries the model's own word timing (see `engine.embedded_timing`)."""
        return self._model is not None and self._model.timed

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(asyncio.to_thread(w.close) for w in workers))

    def status(self) -> EngineStatus:
        ready = bool(self._workers) and self._model is not None
        reason = "" if ready else (self._error or "loading")
        return EngineStatus(
            name=self.name,
            ready=ready,
            reason=reason,
            loaded=("hibari-heart",) if ready else (),
            details={"instances": self.instances, "threads": self.threads, "workers": [w.snapshot() for w in self._workers]},
        )

    def voices(self) -> list[Voice]:
        return [self._voice]

    def metrics_snapshot(self) -> dict[str, float]:
        """Worker counters, streams in flight, model load time (see `Engine`)."""
        numbers: dict[str, float] = {"model_load_seconds": self._load_seconds,
                                     "active_streams": float(sum(w.load for w in self._workers))}
        for worker in self._workers:
            for key, value in dataclasses.asdict(worker.stats).items():
                numbers[f"{key}_total"] = numbers.get(f"{key}_total", 0.0) + value
        return numbers

    @property
    def workers(self) -> list[StepWorker]:
        return list(self._workers)

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        if not self.status().ready:
            raise Unavailable(f"embedded engine not ready: {self.status().reason}", retry_after=2)
        if request.voice.engine != self.name:
            raise InvalidRequest(f"voice {request.voice.id!r} is not an embedded-engine voice", param="voice")
        if request.language.lower() not in _LANGUAGES:
            raise InvalidRequest(
                f"the embedded voice speaks English only, not {request.language!r}", param="language"
            )
        segments = split_sentences(_plain_digits(request.text), self.max_segment_chars)
        worker, model = self._workers[0], self._model
        seed, marks = request.seed, request.segment_marks

        def steps() -> Iterator[np.ndarray | SegmentEnd | None]:
            tts = model.tts
            rng = np.random.default_rng(seed)
            for number, segment in enumerate(segments):
                # hibari may split a segment further; each piece is one step so cancel lands fast.
                pieces = tts.phonemize(segment)
                spoken: list[tuple[str, np.ndarray, int]] = []
                for phonemes in pieces:
                    audio, durations = model.synthesize(phonemes, rng)
                    if marks and durations is not None:  # kept only for the segment's word timing
                        spoken.append((phonemes, durations, len(audio)))
                    yield np.asarray(audio, dtype=np.float32) if len(audio) else None
                if marks:  # a step of its own: the words are worked out after the audio went
                    yield SegmentEnd(number, segment, _timing(tts, segment, spoken, model.timed))

        return _as_chunks(
            worker.stream(steps, priority=request.priority, deadline=request.deadline, request_id=request.request_id,
                          pace=_playing_seconds)
        )


def _playing_seconds(item: np.ndarray | SegmentEnd) -> float:
    return len(item) / SAMPLE_RATE if isinstance(item, np.ndarray) else 0.0


def _timing(tts: Any, segment: str, spoken: list[tuple[str, np.ndarray, int]], timed: bool
            ) -> tuple[TimedWord, ...] | None:
    """The segment's words timed by the model's durations (None when this model cannot time them)."""
    if not timed:
        return None
    words = word_times(spoken_tokens(tts, segment), spoken, tts.vocab)
    return () if words is None else words  # () leaves every word of the segment to interpolation


async def _as_chunks(items: AsyncIterator[np.ndarray | SegmentEnd]) -> AsyncIterator[AudioChunk | SegmentEnd]:
    try:
        async for item in items:
            yield item if isinstance(item, SegmentEnd) else AudioChunk(item)
    finally:
        await items.aclose()  # type: ignore[attr-defined]


def _plain_digits(text: str) -> str:
    """NFKC, then ASCII for every other digit: hibari reads numbers with int(), which raises on the
    superscript and circled digits that `str.isdigit()` (its test) accepts, e.g. '¹' or '❶'. Then
    numbers too long to read as numbers are spelled digit by digit."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(str(unicodedata.digit(c)) if c.isdigit() and not c.isascii() else c for c in text)
    return _NUMBER.sub(_digit_by_digit, text)


# hibari's number reader has names up to the undecillions and raises IndexError beyond 36 digits
# (also as money, ordinals, decimals, comma groups). Past 15 digits nobody says the number anyway.
MAX_SPOKEN_DIGITS = 15
_NUMBER = re.compile(r"\d(?:[\d,]*\d)?")


def _digit_by_digit(match: re.Match[str]) -> str:
    digits = [c for c in match.group() if c.isdigit()]
    return " ".join(digits) if len(digits) > MAX_SPOKEN_DIGITS else match.group()
