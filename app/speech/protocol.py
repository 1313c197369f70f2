"""Wire structs of POST /v1/audio/speech and /v1/models, and OpenAI's error body (msgspec): validated on the
way in, serialised on the way out. The other families keep theirs in their own `protocol` module."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "ulaw", "alaw"]

# Inline ref_audio travels as base64 in the speech request's JSON, which Litestar caps at 10 MB (its
# default body limit): about 7 MB of audio, plenty for 30 s even as uncompressed 48 kHz stereo WAV.
MAX_INLINE_AUDIO_CHARS = 9_900_000

# Model ids a client may send: OpenAI's (served by the primary engine) and each engine's own. GET /v1/models
# lists OpenAI's ids as its SDKs and docs name them; `is_openai_model` also accepts any dated
# `gpt-4o-mini-tts-YYYY-MM-DD`: clients pin snapshots, and OpenAI keeps adding them.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
ENGINE_MODELS = {"hibari": "embedded", "qwen3-tts": "qwen"}
_OPENAI_MODEL = re.compile(r"^(?:tts-1(?:-hd)?(?:-1106)?|gpt-4o-mini-tts(?:-\d{4}-\d{2}-\d{2})?)$")


def is_openai_model(model: str) -> bool:
    """One of OpenAI's speech model ids (lowercase, trimmed), a snapshot of one included."""
    return _OPENAI_MODEL.match(model) is not None


class VoiceId(msgspec.Struct):
    """OpenAI's object form of a custom voice: {"id": "voice_..."}."""

    id: Annotated[str, Meta(min_length=1, max_length=256)]


class SpeechRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/speech. Unknown fields are accepted and ignored, as OpenAI-compatible servers do."""

    model: Annotated[str, Meta(min_length=1, max_length=256, description=(
        "tts-1, tts-1-hd, gpt-4o-mini-tts (and their snapshots: tts-1-1106, tts-1-hd-1106, "
        "gpt-4o-mini-tts-YYYY-MM-DD), hibari or qwen3-tts"))]
    input: Annotated[str, Meta(min_length=1, max_length=4096, description="Text to speak")]
    voice: Annotated[str, Meta(min_length=1, max_length=256)] | VoiceId
    instructions: Annotated[str, Meta(max_length=4096, description="Style control, e.g. 'speak slowly'")] | None = None
    response_format: ResponseFormat = "mp3"
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["audio", "sse"] = "audio"
    sample_rate: Annotated[int, Meta(description=(
        "Output sample rate in Hz (extension): 8000, 16000, 22050, 24000, 44100 or 48000 for pcm, wav, flac, "
        "mp3, aac, ulaw and alaw; 8000, 12000, 16000, 24000 or 48000 for opus. Default: 24000, except opus "
        "(48000) and ulaw/alaw (8000, raw G.711 for telephony)."))] | None = None
    # -- extensions (vLLM-Omni compatible names) ---------------------------------------------
    language: Annotated[str, Meta(max_length=32, description="auto, english, chinese, ... or ISO code")] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    # Below 0.01 the logits overflow when divided by it; do_sample=false is the way to greedy decoding.
    temperature: Annotated[float, Meta(ge=0.01, le=2.0)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=1, le=4096)] | None = None
    repetition_penalty: Annotated[float, Meta(ge=1.0, le=2.0)] | None = None
    max_new_tokens: Annotated[int, Meta(ge=1, le=8192, description="Cap on 12.5 Hz codec frames")] | None = None
    min_new_tokens: Annotated[int, Meta(ge=1, le=8192, description=(
        "End of speech is refused before this many 12.5 Hz frames (Qwen3; the model's default is 2)"))] | None = None
    do_sample: bool | None = None
    priority: Literal["interactive", "bulk"] = "interactive"
    # -- inline cloning for one request (Qwen3 Base model; vLLM-Omni's names) ------------------
    ref_audio: Annotated[str, Meta(max_length=MAX_INLINE_AUDIO_CHARS, description=(
        "Clone a voice for this request only: base64 audio bytes (wav, mp3, ogg/opus, flac, m4a, webm; a "
        "`data:audio/...;base64,` URL is fine) or the id of a stored clone voice. Never fetched: URLs are "
        "refused. 3-30 s of speech after trimming; ~7 MB at most. `voice` is then ignored."))] | None = None
    ref_text: Annotated[str, Meta(max_length=2000, description=(
        "Exact transcript of ref_audio. Without it the speech recognizer (--asr-model) transcribes ref_audio, "
        "or, on a server without one, the clone is x-vector only"))] | None = None
    x_vector_only: bool | None = None
    x_vector_only_mode: bool | None = None  # vLLM-Omni's name for x_vector_only
    # -- word timestamps (see docs/timestamps.md) ----------------------------------------------
    timestamp_granularities: Annotated[list[Literal["word"]], Meta(max_length=1, description=(
        "[\"word\"]: word timestamps, as `speech.timestamps.delta` events (needs stream_format \"sse\"), or "
        "in the results of POST /v1/audio/speech/batch"))] | None = None
    word_timestamps: Annotated[bool, Meta(description="vLLM-Omni's name for timestamp_granularities: "
                                                      "[\"word\"]")] | None = None

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice

    @property
    def timestamps_param(self) -> str | None:
        """The field that asked for word timestamps (None: not asked)."""
        if self.timestamp_granularities:
            return "timestamp_granularities"
        return "word_timestamps" if self.word_timestamps else None


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct):
    """OpenAI's error body."""

    error: ErrorDetail


class WordTimestamp(msgspec.Struct):
    """A word of `input`, in seconds from the start of the response's audio; `input[char_start:char_end]`
    is the word as the request wrote it."""

    word: str
    start: float
    end: float
    char_start: int
    char_end: int


class Usage(msgspec.Struct):
    """Speech usage: input tokens are characters, output tokens are 12.5 Hz audio frames."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class AudioModelList(msgspec.Struct):
    """GET /v1/audio/models: OpenAI's list shape for the SDKs, and the same cards under `models` for
    Open WebUI (its OpenAI TTS engine reads `models: [{id}]` from this route)."""

    data: list[ModelCard]
    models: list[ModelCard]
    object: str = "list"
