"""The engine contract: a synthesis request in, an async stream of float32 24 kHz audio chunks out.

Every engine (embedded, Qwen3, or one in another process) implements `Engine`. The gateway never
needs more than this: `start`, `close`, `status`, `voices`, `synthesize`. An engine that can make
voices (clone from audio, design from words) also offers a `VoiceMaker` as its `voice_maker`.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 24_000


class Priority(enum.IntEnum):
    """Lower runs first: interactive requests overtake bulk jobs in the admission queue."""

    INTERACTIVE = 0
    BULK = 10


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Optional generation knobs; engines ignore the ones they have no use for."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    do_sample: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Voice:
    """A voice an engine can speak with.

    kind: `builtin` (an embedded engine's own voice), `speaker` (a Qwen3 CustomVoice speaker),
    `design` (a VoiceDesign description), `clone` (reference audio + transcript, or x-vector only).
    """

    id: str
    name: str
    kind: str
    engine: str
    language: str = "auto"
    aliases: tuple[str, ...] = ()
    description: str | None = None  # design: the voice description (Qwen `instruct`)
    speaker: str | None = None  # speaker: the CustomVoice speaker name
    ref_audio: str | None = None  # clone: path of the cleaned 24 kHz reference clip
    ref_text: str | None = None  # clone: exact transcript of the reference clip
    ref_text_source: str | None = None  # clone: "given" (by the client) | "transcribed" (by the speech recognizer)
    x_vector_only: bool = False
    created_at: int = 0
    source: str = "builtin"  # builtin | shipped | uploaded | designed


@dataclass(frozen=True, kw_only=True)
class SynthesisRequest:
    """One utterance to synthesize. `voice` is already resolved by the voice registry."""

    text: str
    voice: Voice
    language: str = "auto"
    instructions: str | None = None
    seed: int | None = None
    priority: Priority = Priority.INTERACTIVE
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline: float | None = None  # time.monotonic() by which synthesis must end
    # Yield a `SegmentEnd` after each text segment's last audio (word timestamps need the boundaries).
    segment_marks: bool = False

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] at `sample_rate`; never empty."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class TimedWord:
    """A word said in a stretch of audio, in seconds from that audio's first sample."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """What `synthesize` yields after the last audio of each text segment when the request asks for
    `segment_marks`: the sentence boundaries the engine knows exactly, for word timestamps.

    `text`: the segment as the engine cut it from the request's text. `words`: the engine's own timing
    of what it said in the segment, seconds from the segment's first sample; None when it has none.
    """

    index: int
    text: str
    words: tuple[TimedWord, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class EngineStatus:
    """What `/readyz` reports for one engine."""

    name: str
    ready: bool
    reason: str = ""
    loaded: tuple[str, ...] = ()
    details: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What the gateway needs of a synthesis engine.

    `synthesize` returns an async iterator; closing it early (client gone, cancel, deadline) must stop
    the engine's work at its next step and release whatever it holds.

    Optional, looked up with `getattr` (so it is not part of this Protocol and engines without it still
    match): `metrics_snapshot(self) -> dict[str, float]`, the engine's own numbers for `/metrics`, read
    on the event loop at every scrape (keep it cheap: read counters, take no long locks). Names are
    snake_case; one ending in `_total` is a counter (monotonic since start), any other is a gauge. Each
    is exported as `speech_gateway_engine_<name>{engine="<name>"}`; these have dedicated metrics:
    `model_load_seconds` (time the last model load took), `prompt_cache_hits_total` and
    `prompt_cache_misses_total` (voice-clone prompts reused vs computed).

    Also optional: `times_words: bool`, True when every `SegmentEnd` the engine yields carries its own
    word timing (word timestamps then need no speech recognizer); `stream_slots: int`, how many streams
    it serves at once when `--max-concurrent` is not given (4 otherwise).
    """

    name: str
    sample_rate: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> EngineStatus: ...

    def voices(self) -> list[Voice]: ...

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]: ...
    # ... and `SegmentEnd` items between the chunks, only when `request.segment_marks` asks for them.


@runtime_checkable
class VoiceMaker(Protocol):
    """Optional part of the contract: what an engine that makes voices offers, as its `voice_maker`.

    /v1/audio/voices (upload, design, delete) and inline `ref_audio` on the speech endpoint reach the
    engine through this and nothing else. `require` raises `InvalidRequest` naming the option(s) that
    would enable what is missing (a model, a writable voices folder), so the edge never needs to know
    which engine it talks to or how that engine is configured.
    """

    engine_name: str
    user_dir: Path | None  # where made voices are saved; None: only shipped voices, nothing can be saved
    speaker_ids: frozenset[str]  # the engine's built-in speakers, loaded or not: never deletable, never taken
    reserved_names: frozenset[str]  # names (casefolded) no made voice may take, e.g. OpenAI's voice names

    def require(self, *, design: bool, param: str | None = None) -> None: ...

    def stored_voices(self) -> list[Voice]: ...

    def stored_voice(self, voice_id: str) -> Voice | None: ...

    def inline(self, audio: np.ndarray, *, ref_text: str | None, x_vector_only: bool = False,
               language: str = "auto") -> Voice: ...

    async def prepare(self, voice: Voice, *, load: bool = True) -> bool: ...

    def prepare_soon(self, voice: Voice) -> None: ...

    async def digest(self, voice: Voice) -> str: ...

    async def forget(self, digest: str) -> int: ...


def voice_maker(engine: object) -> VoiceMaker | None:
    """The engine's `VoiceMaker`, or None when it cannot make voices."""
    maker = getattr(engine, "voice_maker", None)
    return maker if isinstance(maker, VoiceMaker) else None
