"""Word timestamps for one synthesis, sentence by sentence, interleaved with its audio.

The engine marks where each text segment's audio ends (`SegmentEnd`), so sentence boundaries are
exact; only the words inside a sentence are timed here: from the engine's own timing when it has one
(the embedded engine's phoneme durations), else from a speech recognizer hearing the sentence's audio
(`Hear`), run beside the audio path. A word's time is its sentence's start in the response's audio plus
its time in the sentence. Which words belong to which sentence follows from the letters and digits
each segment holds (engines only cut and normalize the text, they do not drop letters).

`WordTimer.timed` passes the audio on as it comes and yields each sentence's `SentenceWords` as soon as
they are known, and always before any audio of a later sentence. A recognizer that is slow is waited
for at most as long as its sentence lasts (the listener still has that sentence to hear); then, as
for a failure, the sentence's words are spread over its speech in proportion to their length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.base import AudioChunk, SegmentEnd, TimedWord

from .align import align
from .split import TextWord, alnum_count, split_words

log = logging.getLogger(__name__)

Hear = Callable[[np.ndarray, int], Awaitable[Sequence[TimedWord]]]
"""Recognize mono float32 audio at a sample rate: the words heard, seconds from its first sample."""

MIN_WAIT_S = 1.0  # the least a sentence's words are waited for once a later sentence's audio is ready
_END = object()


@dataclass(frozen=True, slots=True)
class WordTime:
    """One word of the request's text: seconds from the start of the response's audio, and
    `text[char_start:char_end] == word`."""

    word: str
    start: float
    end: float
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class SentenceWords:
    """The words of one sentence (the engine's segment `index`), in order."""

    index: int
    words: tuple[WordTime, ...]

    def wire(self, speed: float = 1.0, char_offset: int = 0) -> list[dict]:
        """JSON-ready words. `speed`: the tempo the audio was stretched by after synthesis (times / speed);
        `char_offset`: where the synthesized text starts in the client's text."""
        return [{"word": w.word, "start": round(float(w.start) / speed, 3), "end": round(float(w.end) / speed, 3),
                 "char_start": w.char_start + char_offset, "char_end": w.char_end + char_offset}
                for w in self.words]


class WordTimer:
    """Times the words of `text` from a synthesis's items; `hear` None: the engine times words itself."""

    def __init__(self, text: str, hear: Hear | None = None):
        self.text = text
        self.hear = hear
        self._words = split_words(text)
        self._before: list[int] = []  # letters and digits of the text before each word
        letters = 0
        for word in self._words:
            self._before.append(letters)
            letters += word.letters
        self._taken = 0  # words given to a sentence so far
        self._letters = 0  # letters and digits of the text the sentences so far held
        self._last: tuple[int, float] = (-1, 0.0)  # the last sentence's index and its words' end

    async def timed(self, items: AsyncIterator[AudioChunk | SegmentEnd]) -> AsyncIterator[AudioChunk | SentenceWords]:
        """`items` (an engine stream with segment marks) as audio chunks and each sentence's words."""
        offset = size = 0  # samples before the current sentence; samples of it so far
        rate = 24000
        audio: list[np.ndarray] = []  # the current sentence's audio, kept only for the recognizer
        pending: deque[asyncio.Future[SentenceWords]] = deque()
        upcoming: asyncio.Future | None = None
        try:
            while True:
                while pending and pending[0].done():
                    if (words := pending.popleft().result()).words:
                        yield words
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(items, _END))
                if pending:  # words may become ready while the engine works on the next audio
                    await asyncio.wait({upcoming, pending[0]}, return_when=asyncio.FIRST_COMPLETED)
                    if not upcoming.done():
                        continue
                item = await upcoming
                upcoming = None
                if item is _END:
                    break
                if isinstance(item, SegmentEnd):
                    samples = np.concatenate(audio) if audio else np.zeros(0, np.float32)
                    pending.append(self._sentence(item, offset / rate, size / rate, samples, rate))
                    offset, size, audio = offset + size, 0, []
                    continue
                while pending:  # a later sentence's audio: the words before it go first
                    if (words := await pending.popleft()).words:
                        yield words
                rate = item.sample_rate
                size += len(item.samples)
                if self.hear is not None:
                    audio.append(item.samples)
                yield item
            while pending:
                if (words := await pending.popleft()).words:
                    yield words
            rest = self._rest(offset / rate)
            if rest is not None:
                yield rest
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)
            for future in pending:
                future.cancel()
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]

    def _take(self, segment: str) -> list[TextWord]:
        """The words of the text whose first letter lies in the next `segment`."""
        self._letters += alnum_count(segment)
        first = self._taken
        while self._taken < len(self._words) and self._before[self._taken] < self._letters:
            self._taken += 1
        return self._words[first:self._taken]

    def _sentence(self, mark: SegmentEnd, start: float, duration: float, samples: np.ndarray,
                  rate: int) -> asyncio.Future[SentenceWords]:
        words = self._take(mark.text)
        if mark.words is not None or self.hear is None or not words or not len(samples):
            future: asyncio.Future[SentenceWords] = asyncio.get_running_loop().create_future()
            heard = mark.words or ()
            lo, hi = (0.0, duration) if mark.words is not None else speech_span(samples, rate, duration)
            future.set_result(self._place(mark.index, words, heard, start, lo, hi))
            return future
        return asyncio.ensure_future(self._heard(mark.index, words, samples, rate, start, duration))

    async def _heard(self, index: int, words: list[TextWord], samples: np.ndarray, rate: int, start: float,
                     duration: float) -> SentenceWords:
        assert self.hear is not None
        try:
            heard = await asyncio.wait_for(self.hear(samples, rate), max(MIN_WAIT_S, duration))
        except Exception as e:  # noqa: BLE001 - a sentence the recognizer could not hear is interpolated
            log.info("word timestamps: sentence %d not recognized (%s); its words are interpolated", index,
                     type(e).__name__ if isinstance(e, TimeoutError) else e)
            heard = ()
        lo, hi = speech_span(samples, rate, duration)
        return self._place(index, words, heard, start, lo, hi)

    def _place(self, index: int, words: list[TextWord], heard: Sequence[TimedWord], start: float, lo: float,
               hi: float) -> SentenceWords:
        times = align([w.key for w in words], heard, lo, hi)
        out = tuple(WordTime(self.text[w.start:w.end], start + a, start + b, w.start, w.end)
                    for w, (a, b) in zip(words, times, strict=True))
        self._last = (index, out[-1].end if out else start + hi)
        return SentenceWords(index, out)

    def _rest(self, end: float) -> SentenceWords | None:
        """Words no sentence held (an engine that changed the letters of its text): placed after the last
        sentence's words, inside the audio, so none is missing."""
        words = self._words[self._taken:]
        self._taken = len(self._words)
        if not words:
            return None
        index, last_end = self._last
        return self._place(index, words, (), 0.0, min(last_end, end), end)


def speech_span(samples: np.ndarray, rate: int, duration: float, floor_db: float = -40.0) -> tuple[float, float]:
    """Where the sentence's audio is louder than `floor_db` under its loudest 10 ms (else all of it)."""
    hop = max(1, rate // 100)
    frames = len(samples) // hop
    if frames < 2:
        return 0.0, duration
    power = np.square(samples[: frames * hop].astype(np.float64)).reshape(frames, hop).mean(axis=1)
    loud = np.flatnonzero(power > power.max() * 10 ** (floor_db / 10))
    if not len(loud):
        return 0.0, duration
    return float(loud[0] * hop / rate), float(min(duration, (loud[-1] + 1) * hop / rate))
