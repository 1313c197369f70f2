"""Wire structs of the Chatterbox TTS server's API (msgspec): HTTP bodies, WebSocket messages in and out.

Client structs tolerate unknown fields, as the server's own clients may send more than its README shows.
Ranges follow the README's table where our engines can honour them, else our own speech API's bounds.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from app.sockets.protocol import MAX_TEXT_CHARS

# Chatterbox's model names; all three mean "the primary engine" here (see serving.model_engine).
CHATTERBOX_MODELS = ("standard", "turbo", "multilingual")
VERSION = "0.1.0"

Format = Literal["wav", "pcm", "pcm_s16le"]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]
VoicePath = Annotated[str, Meta(max_length=1024, description=(
    "A stored voice, named by a file path whose stem is the voice (\"/app/voices/my_voice.wav\" → voice "
    "\"my_voice\"), or a voice name; no file is ever read from the path"))]


class VoiceOptions(msgspec.Struct, kw_only=True):
    """`voice`: which voice, and Chatterbox's generation knobs."""

    audio_prompt_path: VoicePath | None = None
    name: Annotated[str, Meta(max_length=256, description="A voice name (extension; audio_prompt_path wins)")] \
        | None = None
    exaggeration: Annotated[float, Meta(ge=0.0, le=2.0, description="Accepted and ignored: our engines have no "
                                                                    "emotion-intensity knob")] | None = None
    cfg_weight: Annotated[float, Meta(ge=0.0, le=1.0, description="Accepted and ignored: our engines use no "
                                                                  "classifier-free guidance")] | None = None
    temperature: Annotated[float, Meta(ge=0.01, le=2.0, description="Sampling temperature (Qwen3)")] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0, description="Nucleus sampling threshold (Qwen3)")] | None = None
    repetition_penalty: Annotated[float, Meta(ge=1.0, le=2.0, description="Repetition penalty (Qwen3)")] \
        | None = None


class AudioOptions(msgspec.Struct, kw_only=True):
    """`audio`: how the audio goes out."""

    format: Format | None = None  # POST /api/tts: wav; the socket: pcm_s16le
    sample_rate: Annotated[int, Meta(description="8000, 16000, 22050, 24000, 44100 or 48000; default 24000")] \
        | None = None
    stream: bool = True  # the socket: chunks as synthesized (false: one chunk when done); ignored by HTTP
    chunk_size_ms: Annotated[int, Meta(ge=10, le=10_000, description="Audio per `chunk` message on the socket "
                                                                     "(default 100); ignored by HTTP")] | None = None


class _SpeechFields(msgspec.Struct, kw_only=True):
    text: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_CHARS, description="Text to speak")]
    model: Annotated[str, Meta(max_length=256, description=(
        "standard, turbo or multilingual (the primary engine), or one of the gateway's model ids "
        "(hibari, qwen3-tts, tts-1...)"))] | None = None
    language_id: Annotated[str, Meta(max_length=32, description="ISO code (en, zh, fr...) or a language name; "
                                                               "default: detected")] | None = None
    voice: VoiceOptions | Annotated[str, Meta(max_length=1024)] | None = None
    audio: AudioOptions | None = None
    priority: Literal["interactive", "bulk"] = "interactive"  # extension, as on POST /v1/audio/speech


class TTSRequest(_SpeechFields, kw_only=True):
    """POST /api/tts."""


class DefaultVoiceRequest(msgspec.Struct, kw_only=True):
    """POST /api/voice/default; null or "" goes back to the gateway's default voice."""

    voice_path: VoicePath | None = None


class DefaultVoice(msgspec.Struct, kw_only=True):
    voice_path: str | None  # as set (null: none set)
    voice: str  # the id of the voice that speaks when a request names none


class VoiceEntry(msgspec.Struct, kw_only=True):
    name: str  # the voice's id: pass it (or `voice_path`) as audio_prompt_path or voice_path
    voice_path: str
    display_name: str
    kind: str
    language: str
    engine: str


class VoiceListing(msgspec.Struct, kw_only=True):
    voices: list[VoiceEntry]
    default_voice: str


class Uploaded(msgspec.Struct, kw_only=True):
    status: str
    name: str
    voice_path: str


class Health(msgspec.Struct, kw_only=True):
    status: str  # healthy | loading
    loaded_models: list[str]
    device: str
    version: str = VERSION


# -- /ws/tts: client → server ----------------------------------------------------------------
class Say(_SpeechFields, tag_field="type", tag="say", kw_only=True):
    id: Annotated[str, Meta(max_length=256)]


class SetVoice(msgspec.Struct, tag_field="type", tag="set_voice", kw_only=True):
    voice_path: VoicePath | None = None
    id: Annotated[str, Meta(max_length=256)] | None = None


ClientMessage = Say | SetVoice
CLIENT_TYPES = ("say", "set_voice")


# -- /ws/tts: server → client ----------------------------------------------------------------
class _Out(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    pass


class Ready(_Out, tag="ready"):
    models: list[str]
    device: str


class Chunk(_Out, tag="chunk"):
    id: str
    index: int
    data: str  # base64 of the audio bytes
    is_last: bool


class Done(_Out, tag="done"):
    id: str
    duration_seconds: float


class VoiceSet(_Out, tag="voice_set"):
    """The answer to `set_voice` (the README defines none; clients ignore types they do not know)."""

    voice_path: str | None
    voice: str
    id: str | None = None


class Error(_Out, tag="error"):
    id: str | None
    message: str
    code: str  # the gateway's error code (invalid_request, voice_not_found, server_overloaded...)
    retry_after: float | None = None
