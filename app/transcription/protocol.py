"""Wire structs of POST /v1/audio/transcriptions and /v1/audio/translations (OpenAI's contract, msgspec)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["word", "segment"]

# OpenAI's speech-to-text model ids: every one means the configured recognizer. Dated snapshots
# (gpt-4o-mini-transcribe-2025-12-15) are matched by OPENAI_MODEL.
OPENAI_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe")
OPENAI_MODEL = re.compile(r"^(whisper-1|gpt-transcribe|gpt-4o(-mini)?-transcribe)(-\d{4}-\d{2}-\d{2})?$")
DIARIZE_MODEL = re.compile(r"^gpt-4o-transcribe-diarize(-\d{4}-\d{2}-\d{2})?$")
MAX_PROMPT_CHARS = 2000


class TranscriptionForm(msgspec.Struct, kw_only=True):
    """The form fields besides `file` (multipart). Fields OpenAI has and Whisper cannot use
    (`chunking_strategy`, `include`, `keywords`, speaker references) are accepted and ignored."""

    model: Annotated[str, Meta(min_length=1, max_length=256, description=(
        "whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe (+ dated forms), or the --asr-model value: all "
        "mean the configured recognizer"))]
    language: Annotated[str, Meta(max_length=32, description="ISO 639-1 code of the audio's language (e.g. en); "
                                                             "detected when left out")] | None = None
    prompt: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS, description=(
        "Text to guide the style, spelling or vocabulary, or the transcript of the audio before this"))] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0, description=(
        "0 (default): greedy, sampling hotter only where decoding fails; above 0: that temperature"))] = 0.0
    response_format: ResponseFormat = "json"
    timestamp_granularities: list[Granularity] = []
    stream: bool = False


class Usage(msgspec.Struct):
    seconds: float
    type: str = "duration"


class TranscriptionJson(msgspec.Struct):
    text: str
    usage: Usage


class TranscriptionText(msgspec.Struct):
    """translations `json`: OpenAI's translation object has only the text."""

    text: str


class WordCard(msgspec.Struct):
    word: str
    start: float
    end: float


class SegmentCard(msgspec.Struct):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionVerbose(msgspec.Struct, omit_defaults=True):
    task: Literal["transcribe", "translate"]
    language: str  # Whisper's name for it: "english"
    duration: float
    text: str
    segments: list[SegmentCard] | None = None  # with the segment granularity (the default)
    words: list[WordCard] | None = None  # with the word granularity
    usage: Usage | None = None


class TextDelta(msgspec.Struct, tag="transcript.text.delta", tag_field="type"):
    delta: str


class TextDone(msgspec.Struct, tag="transcript.text.done", tag_field="type"):
    text: str
