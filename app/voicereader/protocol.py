"""VoiceReader tts-engine wire format (msgspec): HTTP bodies, events-socket events, error codes.

The shapes follow what VoiceReader's clients read (`scripts/stream_play_queue_test.py`, the README's
quick check); `docs/IPC_API.md` itself is not public, so the fields it would add are our choice and
are documented in docs/protocols.md ("VoiceReader tts-engine clients").
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from app.sockets.protocol import MAX_TEXT_CHARS
from engine.errors import DeadlineExceeded, InvalidRequest, Overloaded, SpeechError, Unavailable, VoiceNotFound

DEFAULT_VOICE_ID = "0"  # VoiceReader's built-in first-run voice: the gateway's default voice
MIN_CHUNK_CHARS, MAX_CHUNK_CHARS = 100, MAX_TEXT_CHARS  # VoiceReader's client refuses below 100 too
Rate = Annotated[float, Meta(ge=0.25, le=4.0, description="pitch-preserving tempo, like OpenAI's `speed`")]
Volume = Annotated[float, Meta(ge=0.0, le=2.0, description="gain applied to the PCM")]
Pitch = Annotated[float, Meta(ge=0.5, le=2.0, description="accepted, no effect (reserved, as in VoiceReader)")]
ChunkChars = Annotated[int, Meta(ge=MIN_CHUNK_CHARS, le=MAX_CHUNK_CHARS,
                                 description="longest text chunk synthesized in one go (sentences are kept whole)")]

# -- error codes ----------------------------------------------------------------------------------
INVALID_REQUEST = "INVALID_REQUEST"
VOICE_NOT_FOUND = "VOICE_NOT_FOUND"
JOB_NOT_FOUND = "JOB_NOT_FOUND"
MODEL_NOT_READY = "MODEL_NOT_READY"
RATE_LIMITED = "RATE_LIMITED"
UNAUTHORIZED = "UNAUTHORIZED"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
TIMEOUT = "TIMEOUT"
SYNTHESIS_ERROR = "SYNTHESIS_ERROR"
INTERNAL_ERROR = "INTERNAL_ERROR"
NO_LISTENER = "NO_LISTENER"  # a job stopped because no events socket took its audio (see jobs.py)


class JobNotFound(InvalidRequest):
    status = 404
    code = "job_not_found"


def error_code(exc: SpeechError) -> str:
    """The code for an engine/scheduler error (subclasses checked before their bases)."""
    for kind, code in (
        (JobNotFound, JOB_NOT_FOUND),
        (VoiceNotFound, VOICE_NOT_FOUND),
        (InvalidRequest, INVALID_REQUEST),
        (Overloaded, RATE_LIMITED),
        (Unavailable, MODEL_NOT_READY),
        (DeadlineExceeded, TIMEOUT),
    ):
        if isinstance(exc, kind):
            return code
    return SYNTHESIS_ERROR


class VoiceReaderError(msgspec.Struct, omit_defaults=True):
    """Every refusal of the VoiceReader routes (and the `error` of JOB_ERROR / ERROR events)."""

    code: str
    message: str
    retry_after: float | None = None


# -- HTTP bodies ----------------------------------------------------------------------------------
class VoiceReaderChunking(msgspec.Struct, forbid_unknown_fields=False):
    max_chars: ChunkChars | None = None


class VoiceReaderSettings(msgspec.Struct, forbid_unknown_fields=False):
    """Playback controls as VoiceReader nests them (`settings.rate`, …, `settings.chunking.max_chars`)."""

    rate: Rate | None = None
    pitch: Pitch | None = None
    volume: Volume | None = None
    chunking: VoiceReaderChunking | None = None


class VoiceReaderSpeakRequest(msgspec.Struct, forbid_unknown_fields=False):
    """Start a speak job. The top-level controls are shorthands; they win over `settings.*`."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_CHARS, description="text to read aloud")]
    voice_id: Annotated[str, Meta(min_length=1, max_length=256,
                                  description='"0" is the default voice; any other id names a gateway voice')] = (
        DEFAULT_VOICE_ID)
    language: Annotated[str, Meta(max_length=32, description="auto, english, … or an ISO code")] | None = None
    rate: Rate | None = None
    pitch: Pitch | None = None
    volume: Volume | None = None
    chunk_max_chars: ChunkChars | None = None
    settings: VoiceReaderSettings | None = None

    def control(self, name: str) -> float | None:
        value = getattr(self, name)
        if value is None and self.settings is not None:
            value = getattr(self.settings, name)
        return value

    @property
    def max_chars(self) -> int | None:
        if self.chunk_max_chars is not None:
            return self.chunk_max_chars
        chunking = self.settings.chunking if self.settings is not None else None
        return chunking.max_chars if chunking is not None else None


class VoiceReaderSpeakResponse(msgspec.Struct):
    job_id: str
    status: Literal["started", "queued", "canceled"]
    ws_url: str
    voice_id: str
    queue_position: int
    chunks: int


class VoiceReaderCancelRequest(msgspec.Struct, forbid_unknown_fields=False):
    job_id: Annotated[str, Meta(max_length=64, description="omit: the current job and every queued one")] | None = (
        None)


class VoiceReaderCancelResponse(msgspec.Struct):
    canceled: bool
    job_ids: list[str]


class VoiceReaderWarmupRequest(msgspec.Struct, forbid_unknown_fields=False):
    wait: bool = False
    force: bool = False
    reason: Annotated[str, Meta(max_length=256)] | None = None


class VoiceReaderWarmupState(msgspec.Struct):
    status: Literal["idle", "running", "ready", "failed"]
    runs: int
    last_duration_ms: float | None
    last_error: str | None


class VoiceReaderWarmupResponse(msgspec.Struct):
    accepted: bool
    warmup: VoiceReaderWarmupState


class VoiceReaderRuntime(msgspec.Struct):
    backend: str
    ready: bool
    fallback_active: bool
    detail: str
    warmup: VoiceReaderWarmupState
    engines: list[dict[str, object]]


class VoiceReaderJobs(msgspec.Struct):
    current: str | None
    queued: int
    listeners: int
    buffered_events: int


class VoiceReaderHealth(msgspec.Struct):
    status: Literal["ok", "loading"]
    ready: bool
    active_model_id: str
    device: str
    ws_url: str
    runtime: VoiceReaderRuntime
    jobs: VoiceReaderJobs


class VoiceReaderVoice(msgspec.Struct):
    voice_id: str
    display_name: str
    language: str
    engine: str
    kind: str
    default: bool


class VoiceReaderVoices(msgspec.Struct):
    voices: list[VoiceReaderVoice]


# -- events socket: server events (tag = `type`) ---------------------------------------------------
class AudioPayload(msgspec.Struct):
    format: str
    sample_rate: int
    channels: int
    data_base64: str
    duration_ms: float


class JobStarted(msgspec.Struct, tag="JOB_STARTED", tag_field="type"):
    job_id: str
    voice_id: str
    chunks: int


class AudioChunk(msgspec.Struct, tag="AUDIO_CHUNK", tag_field="type"):
    job_id: str
    seq: int  # 0, 1, 2… within the job
    chunk_index: int  # the text chunk this audio belongs to
    audio: AudioPayload


class JobDone(msgspec.Struct, tag="JOB_DONE", tag_field="type"):
    job_id: str
    audio_chunks: int
    audio_ms: float


class JobCanceled(msgspec.Struct, tag="JOB_CANCELED", tag_field="type"):
    job_id: str
    audio_chunks: int
    reason: str


class JobError(msgspec.Struct, tag="JOB_ERROR", tag_field="type"):
    job_id: str
    audio_chunks: int
    error: VoiceReaderError


class Connected(msgspec.Struct, tag="CONNECTED", tag_field="type"):
    current_job: str | None
    queued: int
    replayed: int  # buffered events that follow, sent while no socket was connected


class Pong(msgspec.Struct, tag="PONG", tag_field="type"):
    pass


class Error(msgspec.Struct, tag="ERROR", tag_field="type"):
    error: VoiceReaderError


TERMINAL = (JobDone, JobCanceled, JobError)


# -- events socket: client events ------------------------------------------------------------------
class Ping(msgspec.Struct, tag="PING", tag_field="type", forbid_unknown_fields=False):
    pass


class Cancel(msgspec.Struct, tag="CANCEL", tag_field="type", forbid_unknown_fields=False):
    job_id: Annotated[str, Meta(max_length=64)] | None = None


ClientEvent = Ping | Cancel
CLIENT_TYPES = ("PING", "CANCEL")
