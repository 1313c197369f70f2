"""Wire structs of the HTTP API (msgspec): validated on the way in, serialised on the way out."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]

MAX_AUDIO_BYTES = 10 * 1024 * 1024  # the largest voice upload (OpenAI's limit)
# Inline ref_audio travels as base64 in the speech request's JSON, which Litestar caps at 10 MB (its
# default body limit): about 7 MB of audio, plenty for 30 s even as uncompressed 48 kHz stereo WAV.
MAX_INLINE_AUDIO_CHARS = 9_900_000

# Model ids a client may send: OpenAI's (served by the primary engine) and each engine's own.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
ENGINE_MODELS = {"hibari": "embedded", "qwen3-tts": "qwen"}


class VoiceId(msgspec.Struct):
    """OpenAI's object form of a custom voice: {"id": "voice_..."}."""

    id: Annotated[str, Meta(min_length=1, max_length=256)]


class SpeechRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/speech. Unknown fields are accepted and ignored, as OpenAI-compatible servers do."""

    model: Annotated[str, Meta(min_length=1, max_length=256, description="tts-1, tts-1-hd, gpt-4o-mini-tts, "
                                                                         "hibari or qwen3-tts")]
    input: Annotated[str, Meta(min_length=1, max_length=4096, description="Text to speak")]
    voice: Annotated[str, Meta(min_length=1, max_length=256)] | VoiceId
    instructions: Annotated[str, Meta(max_length=4096, description="Style control, e.g. 'speak slowly'")] | None = None
    response_format: ResponseFormat = "mp3"
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["audio", "sse"] = "audio"
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
    ref_text: Annotated[str, Meta(max_length=2000, description="Exact transcript of ref_audio (required "
                                                                "unless x_vector_only)")] | None = None
    x_vector_only: bool | None = None
    x_vector_only_mode: bool | None = None  # vLLM-Omni's name for x_vector_only

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct):
    """OpenAI's error body."""

    error: ErrorDetail


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


class VoiceCard(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    engine: str
    language: str
    kind: str
    object: Literal["audio.voice"]  # no default: omit_defaults would drop it, and OpenAI's shape needs it
    aliases: list[str] = []
    description: str | None = None
    created_at: int = 0
    source: str = "builtin"
    # -- stored voices (uploaded, designed, shipped clones) --------------------------------------
    type: Literal["audio_sample", "prompt"] | None = None  # OpenAI's: made from audio, or from a description
    prompt: str | None = None  # OpenAI's name for the description a designed voice was made from
    ref_text: str | None = None  # clone: the transcript of its reference clip
    x_vector_only: bool = False
    deletable: bool = False  # uploaded and designed voices can be deleted; shipped and built-in ones cannot
    sample_url: str | None = None  # the reference clip (audio/wav): GET it, relative to the server


class VoiceDeleted(msgspec.Struct):
    """DELETE /v1/audio/voices/{voice_id}, in OpenAI's shape."""

    id: str
    deleted: bool = True
    object: str = "audio.voice.deleted"


class CreateVoiceRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/voices as JSON (a designed voice), and the text fields of the multipart form.

    Multipart with `audio_sample` (a file) clones a voice from audio; `description` + `sample_text`
    (JSON or multipart, no audio) designs one. OpenAI's SDK names are accepted too: `prompt` for
    description, `script_hint` for sample_text, `type` ("audio_sample" | "prompt").
    """

    name: Annotated[str, Meta(min_length=1, max_length=64, description="Shown as given; the id is derived from it")]
    type: Literal["audio_sample", "prompt"] | None = None
    consent: Annotated[str, Meta(max_length=256, description="OpenAI's consent recording id, kept")] | None = None
    # -- cloning from audio -------------------------------------------------------------------
    ref_text: Annotated[str, Meta(max_length=2000, description="Exact transcript of audio_sample (required "
                                                                "unless x_vector_only)")] | None = None
    x_vector_only: bool = False
    # -- designing from a description (VoiceDesign renders sample_text, Base clones the result) --
    description: Annotated[str, Meta(max_length=2000, description="The voice, in words")] | None = None
    sample_text: Annotated[str, Meta(max_length=600, description="What the designed voice says in its "
                                                                  "reference clip (3-30 s of speech)")] | None = None
    prompt: Annotated[str, Meta(max_length=2000)] | None = None
    script_hint: Annotated[str, Meta(max_length=600)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    # -- both --------------------------------------------------------------------------------
    language: Annotated[str, Meta(max_length=32, description="auto, english, chinese, ... or ISO code")] | None = None


class VoiceList(msgspec.Struct):
    """OpenAI's list shape. No `voices` copy: Kokoro/vLLM-Omni clients expect a list of names there,
    not these cards, so repeating the cards under that key served no real client."""

    data: list[VoiceCard]
    object: str = "list"


class BatchRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/speech/batch: up to 64 speech requests, synthesized at bulk priority."""

    items: Annotated[list[SpeechRequest], Meta(min_length=1, max_length=64)]
    output: Literal["json", "zip"] = "json"


class BatchItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: Literal["ok", "error"]
    format: str | None = None
    audio: str | None = None  # base64 of the encoded file (json output)
    file: str | None = None  # its name inside the archive (zip output)
    duration_s: float | None = None
    voice: str | None = None
    error: ErrorDetail | None = None


class BatchResponse(msgspec.Struct):
    data: list[BatchItemResult]
    object: str = "list"
