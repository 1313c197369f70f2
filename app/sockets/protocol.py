"""Wire events of the two speech WebSockets (msgspec): tagged unions in, structs out.

`/api/v1/speak` speaks the Makima protocol (camelCase, `type` values such as `audio_end`);
`/v1/audio/speech/stream` speaks vLLM-Omni's streaming-input protocol (snake_case, dotted types).
Client events tolerate unknown fields, as the HTTP structs do; every server event is a struct whose
tag is its `type`, so `msgspec.json.encode(event)` is the frame.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from app.speech.protocol import WordTimestamp
from engine.errors import (
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    SpeechError,
    Unavailable,
    VoiceNotFound,
)

MAX_TEXT_CHARS = 4096  # the same bound as `input` of POST /v1/audio/speech
SampleRate = Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000]
SAMPLE_RATES: tuple[int, ...] = SampleRate.__args__  # type: ignore[attr-defined]
Encoding = Literal["pcm16", "pcm32f", "ulaw", "alaw"]  # ulaw/alaw: raw G.711, one byte a sample
ENCODINGS: tuple[str, ...] = Encoding.__args__  # type: ignore[attr-defined]
SpokenText = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
Speed = Annotated[float, Meta(ge=0.25, le=4.0)]

# -- error codes (the spec's names) -----------------------------------------------------------
MODEL_LOADING = "MODEL_LOADING"
SYNTHESIS_ERROR = "SYNTHESIS_ERROR"
INVALID_TEXT = "INVALID_TEXT"  # every 400-like refusal: bad text, bad frame, bad start parameters
VOICE_NOT_FOUND = "VOICE_NOT_FOUND"
UNAUTHORIZED = "UNAUTHORIZED"
RATE_LIMITED = "RATE_LIMITED"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"


def error_code(exc: SpeechError) -> str:
    """The spec's code for an engine/scheduler error (subclasses checked before their bases)."""
    for kind, code in (
        (VoiceNotFound, VOICE_NOT_FOUND),
        (InvalidRequest, INVALID_TEXT),
        (Overloaded, RATE_LIMITED),
        (Unavailable, MODEL_LOADING),
        (DeadlineExceeded, TIMEOUT),
    ):
        if isinstance(exc, kind):
            return code
    return SYNTHESIS_ERROR


class ProtocolError(Exception):
    """A client frame we cannot use; answered with an `error` event, the socket stays open."""

    def __init__(self, message: str, code: str = INVALID_TEXT):
        super().__init__(message)
        self.message = message
        self.code = code


def decode_event(raw: str, union: Any, known: tuple[str, ...]) -> Any:
    """Parse one JSON text frame into a member of `union`; raises ProtocolError saying what is wrong."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ProtocolError("frame is not valid JSON; send one JSON object per text frame") from None
    except RecursionError:
        raise ProtocolError("frame is nested too deeply; send a flat JSON object") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object with a 'type' field")
    kind = obj.get("type")
    if kind not in known:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of: {', '.join(known)}")
    try:
        return msgspec.convert(obj, union)
    except msgspec.ValidationError as e:
        raise ProtocolError(f"invalid {kind}: {e}") from None


# -- /api/v1/speak: client → server -----------------------------------------------------------
class _Speak(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class Start(_Speak, tag="start"):
    sample_rate: SampleRate | None = None  # default: 24000, or 8000 for ulaw/alaw (see `rate`)
    encoding: Encoding = "pcm16"
    voice: Annotated[str, Meta(max_length=256)] | None = None
    language: Annotated[str, Meta(max_length=32)] | None = None
    auth_token: str | None = None
    contract_id: str | None = None  # accepted for the spec's sake; the gateway has no use for it
    timestamps: bool = False  # word timestamps: a `words` event for each sentence spoken

    @property
    def rate(self) -> int:
        """The session's sample rate: the one asked for, else telephony's 8 kHz for G.711 and 24 kHz for PCM."""
        if self.sample_rate is not None:
            return self.sample_rate
        return 8000 if self.encoding in ("ulaw", "alaw") else 24000


class Speak(_Speak, tag="speak"):
    text: SpokenText
    priority: Literal["normal", "high"] = "normal"


class Cancel(_Speak, tag="cancel"):
    pass


class Stop(_Speak, tag="stop"):
    reason: str | None = None


SpeakClientEvent = Start | Speak | Cancel | Stop
SPEAK_TYPES = ("start", "speak", "cancel", "stop")


# -- /api/v1/speak: server → client -----------------------------------------------------------
class _Out(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, kw_only=True):
    pass


class Capabilities(msgspec.Struct, rename="camel"):
    streaming: bool
    languages: list[str]
    encodings: list[str]
    sample_rates: list[int]


class Ready(_Out, tag="ready"):
    session_id: str
    voice_loaded: bool
    voice: str
    capabilities: Capabilities


class Started(_Out, tag="started"):
    sample_rate: int
    encoding: str
    voice: str
    language: str


class AudioEnd(_Out, tag="audio_end"):
    pass


class Complete(_Out, tag="complete"):
    duration_ms: int
    characters_processed: int
    audio_length_ms: int


class Cancelled(_Out, tag="cancelled"):
    """Acknowledges `cancel` (reason "cancel") or a `priority: high` speak (reason "replaced")."""

    reason: str
    utterances: int  # how many utterances were stopped or dropped from the queue


class Stopped(_Out, tag="stopped"):
    reason: str


class Words(_Out, tag="words"):
    """One sentence's words (`start` with `timestamps: true`): seconds from the start of the utterance's
    audio, character offsets into the `speak` text; sent before that utterance's `audio_end`."""

    words: list[WordTimestamp]


class Error(_Out, tag="error"):
    code: str
    message: str
    recoverable: bool  # no default: omit_defaults would drop it, and the spec's clients read it
    retry_after: float | None = None


# -- /v1/audio/speech/stream (vLLM-Omni names): client → server -------------------------------
class _Stream(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class SessionConfig(_Stream, tag="session.config"):
    model: str | None = None
    voice: Annotated[str, Meta(max_length=256)] | None = None
    language: Annotated[str, Meta(max_length=32)] | None = None
    instructions: Annotated[str, Meta(max_length=4096)] | None = None
    response_format: Literal["pcm"] = "pcm"
    speed: Speed = 1.0
    sample_rate: SampleRate = 24000
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    timestamps: bool = False  # word timestamps: `audio.timestamps` for each sentence spoken


class InputText(_Stream, tag="input.text"):
    text: SpokenText


class InputDone(_Stream, tag="input.done"):
    pass


class SessionClose(_Stream, tag="session.close"):
    pass


StreamClientEvent = SessionConfig | InputText | InputDone | SessionClose
STREAM_TYPES = ("session.config", "input.text", "input.done", "session.close")


# -- /v1/audio/speech/stream: server → client -------------------------------------------------
class _StreamOut(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class AudioStart(_StreamOut, tag="audio.start"):
    sentence_index: int
    sentence_text: str
    format: str = "pcm"
    sample_rate: int = 24000


class AudioTimestamps(_StreamOut, tag="audio.timestamps"):
    """The words of sentence `sentence_index` (config `timestamps: true`): seconds from that sentence's first
    audio, character offsets into its `sentence_text`; sent before its `audio.done`."""

    sentence_index: int
    words: list[WordTimestamp]


class AudioDone(_StreamOut, tag="audio.done"):
    sentence_index: int
    total_bytes: int
    error: bool = False


class SessionDone(_StreamOut, tag="session.done"):
    total_sentences: int


class StreamError(_StreamOut, tag="error"):
    message: str
    code: str
    recoverable: bool = True
