"""Text segmentation: whole texts into sentence-sized segments, and text streamed in piece by piece.

Segments bound how much one engine call generates (runaway guard, memory) and let the first audio
leave after the first sentence instead of after the whole text. Splitting never loses or repeats a
character that matters: joining the segments with single spaces gives the input with runs of
whitespace collapsed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

# Sentence end: . ! ? … and CJK full stops, optionally followed by closing quotes/brackets, then
# whitespace (or directly, for CJK punctuation, which needs no space).
_SENTENCE_END = re.compile(r"""(?:[.!?…]+["'”’)\]]*(?=\s)|[。！？]+["'”’)\]」』]*)""")
_CLAUSE_END = re.compile(r"""(?:[,;:—–]["'”’)\]]*(?=\s)|[，；：、]+)""")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e no fig mt inc ltd co jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


def _is_abbreviation(text: str, end: int) -> bool:
    """A period after a title, an initial or a decimal point does not end a sentence."""
    if text[end - 1] != ".":
        return False
    start = end - 1
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start : end - 1].lstrip("(\"'“‘").lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _cut_points(text: str, pattern: re.Pattern[str]) -> list[int]:
    return [m.end() for m in pattern.finditer(text) if pattern is not _SENTENCE_END or not _is_abbreviation(text, m.end())]


def _split_long(piece: str, max_chars: int) -> list[str]:
    """A sentence longer than max_chars: split at clause punctuation, then at spaces, then hard."""
    out: list[str] = []
    while len(piece) > max_chars:
        window = piece[: max_chars + 1]
        cuts = [c for c in _cut_points(window, _CLAUSE_END) if c >= max_chars // 3]
        if not cuts:
            spaces = [m.start() for m in re.finditer(r"\s", window) if m.start() >= max_chars // 3]
            cuts = spaces[-1:] or [max_chars]
        cut = cuts[-1]
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    if piece:
        out.append(piece)
    return out


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Sentences of `text`, none longer than `max_chars`, whitespace-normalised, empty ones dropped."""
    text = re.sub(r"\s+", " ", text).strip()
    out: list[str] = []
    start = 0
    for cut in [*_cut_points(text, _SENTENCE_END), len(text)]:
        sentence = text[start:cut].strip()
        start = cut
        if sentence:
            out.extend(_split_long(sentence, max_chars))
    return [s for s in out if any(ch.isalnum() for ch in s)] or ([text] if text else [])


class IncrementalSegmenter:
    """Turns text arriving in arbitrary pieces (LLM tokens) into segments ready to speak.

    A segment is released as soon as a sentence is complete, or a clause once the pending text is
    long; `poll()`, after `idle_flush_s` without new text, releases a finished last sentence, or
    everything up to the last word boundary once at least `min_words` words wait. `finish()`
    releases the rest. Nothing is lost or repeated, however the text was split: the released
    segments joined with single spaces equal the whitespace-normalised input (except where a word
    longer than `max_chars` had to be cut, or CJK punctuation ended a segment with no space after it).

    Options for clients that tune chunking (all off by default): a complete sentence shorter than
    `min_chars` characters or `min_segment_words` words waits to be joined with what follows (until
    a pause, a delay or `finish()` releases it); with `max_delay_s`, text whose oldest part has
    waited that long is released by `poll()` whatever its length: up to its last word boundary while
    text keeps arriving, all of it once nothing new came for `max_delay_s` either. `due_in()` says
    when `poll()` may next release something.
    """

    def __init__(
        self,
        *,
        max_chars: int = 300,
        clause_chars: int = 120,
        idle_flush_s: float = 1.0,
        min_words: int = 6,
        min_chars: int = 0,
        min_segment_words: int = 0,
        max_delay_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_chars = max_chars
        self.clause_chars = clause_chars
        self.idle_flush_s = idle_flush_s
        self.min_words = min_words
        self.min_chars = min_chars
        self.min_segment_words = min_segment_words
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._buf = ""
        self._last_change = clock()
        self._since: float | None = None  # when the oldest text still in the buffer arrived (about)

    @property
    def pending(self) -> str:
        return self._buf

    def push(self, piece: str) -> list[str]:
        if piece:
            self._buf += piece
            self._last_change = self._clock()
            if self._since is None and self._buf.strip():
                self._since = self._last_change
        return self._release(final=False)

    def due_in(self) -> float | None:
        """Seconds until `poll()` may release something (None: only new text or `finish()` will)."""
        if not self._buf.strip():
            return None
        now = self._clock()
        deadlines = [self._last_change + self.idle_flush_s]
        if self.max_delay_s is not None:
            deadlines.append(self._last_change + self.max_delay_s)
            if self._since is not None:
                deadlines.append(self._since + self.max_delay_s)
        future = [d - now for d in deadlines if d > now]
        return min(future) if future else None

    def poll(self) -> list[str]:
        """Call periodically: releases text that has waited `idle_flush_s` without a boundary.

        A finished sentence at the very end (it only lacked the space that confirms it) goes out
        whatever its length; otherwise at least `min_words` words must wait, and an unfinished last
        word stays behind.
        """
        if not self._buf.strip():
            return []
        idle = self._clock() - self._last_change
        tail = self._buf.rstrip()
        if self.max_delay_s is not None and self._since is not None and self._clock() - self._since >= self.max_delay_s:
            if idle >= self.max_delay_s or self._buf[-1].isspace():
                return self._emit(len(self._buf))
            last_gap = re.search(r"\s\S*$", tail)
            if last_gap and self._buf[: last_gap.start()].strip():
                return self._emit(last_gap.start())  # the last word may still be arriving
        if idle < self.idle_flush_s:
            return []
        if len(tail) in _cut_points(tail + " ", _SENTENCE_END):
            return self._emit(len(self._buf))
        if len(self._buf.split()) < self.min_words:
            return []
        if self._buf[-1].isspace():
            return self._emit(len(self._buf))
        last_gap = re.search(r"\s\S*$", tail)
        return self._emit(last_gap.start()) if last_gap else []

    def finish(self) -> list[str]:
        return self._release(final=True)

    def _emit(self, cut: int) -> list[str]:
        head, self._buf = self._buf[:cut], self._buf[cut:]
        self._since = self._last_change if self._buf.strip() else None
        return self._segments(head)

    def _segments(self, head: str) -> list[str]:
        return [s for s in _split_long(re.sub(r"\s+", " ", head).strip(), self.max_chars) if s]

    def _release(self, *, final: bool) -> list[str]:
        out: list[str] = []
        # Every complete sentence in one scan and one slice: rescanning the rest after each sentence
        # made a 4 KB piece of short sentences cost seconds (quadratic). A sentence end counts only
        # once something follows it, so "3." in "3.5" is not cut.
        buf = self._buf
        start = 0
        for cut in _cut_points(buf, _SENTENCE_END):
            if cut < len(buf) and self._long_enough(buf[start:cut]):
                out.extend(self._segments(buf[start:cut]))
                start = cut
        self._buf = buf[start:]
        if start:
            self._since = self._last_change if self._buf.strip() else None
        while True:
            if len(self._buf) > self.clause_chars:
                clause = [c for c in _cut_points(self._buf, _CLAUSE_END) if c < len(self._buf)]
                if clause:
                    out.extend(self._emit(clause[-1]))
                    continue
            if len(self._buf) > self.max_chars:
                space = self._buf.rfind(" ", 0, self.max_chars)
                out.extend(self._emit(space if space > 0 else self.max_chars))
                continue
            break
        if final and self._buf.strip():
            out.extend(self._emit(len(self._buf)))
        if final:
            self._buf = ""
            self._since = None
        return out

    def _long_enough(self, sentence: str) -> bool:
        """A complete sentence may go out alone (else it waits to be joined with what follows)."""
        return len(sentence.strip()) >= self.min_chars and len(sentence.split()) >= self.min_segment_words
