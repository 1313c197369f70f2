"""What a recognizer returns: words, segments and the whole transcript, times in seconds from the audio's start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    word: str  # without the surrounding spaces Whisper's tokens carry; punctuation attached as spoken
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str  # as Whisper writes it: a leading space before each segment of space-separated languages
    words: list[Word] = field(default_factory=list)  # empty unless word timestamps were asked for
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    compression_ratio: float = 0.0
    tokens: list[int] = field(default_factory=list)


def text_of(segments: Sequence[Segment]) -> str:
    """The segments' text as one (Whisper's leading spaces join them)."""
    return "".join(s.text for s in segments).strip()


@dataclass(frozen=True)
class Transcript:
    language: str  # ISO 639-1 code, e.g. "en"
    duration: float  # seconds of audio heard
    segments: list[Segment]

    @property
    def text(self) -> str:
        return text_of(self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]
