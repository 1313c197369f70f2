"""The Chatterbox TTS server's routes: health, speech, the default voice, voices, upload, and `/ws/tts`.

The HTTP routes take the API key like the /v1 routes (`Authorization: Bearer`; /health needs none,
like /healthz); errors are the gateway's JSON error body with the matching status (400, 401, 404,
429 when busy, 503 while loading).
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request, Response, WebSocket, get, post, websocket
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, RequestBody, Schema

from app.audio.encoding import content_type
from app.chatterbox.protocol import DefaultVoice, DefaultVoiceRequest, Health, TTSRequest, Uploaded, VoiceListing
from app.chatterbox.serving import (
    default_voice,
    format_of,
    health,
    set_default_voice,
    speech_params,
    upload_voice,
    voice_listing,
)
from app.chatterbox.session import ChatterboxSession
from app.ops.auth import require_api_key
from app.ops.closing_stream import ClosingStream
from app.ops.openapi import error_responses
from app.ops.request_id import request_id_of
from app.speech.serving import audio_body, open_with_encoder
from app.voices.serving import MAX_CREATE_BODY
from engine.service import SpeechService

TAGS = ["Chatterbox"]


@dataclass
class _AudioOperation(Operation):
    """The 200 of POST /api/tts: WAV or raw PCM, chosen by `audio.format`."""

    def __post_init__(self) -> None:
        if not self.responses or "200" not in self.responses:
            return
        binary = {
            "audio/wav": "`audio.format: wav` (the default): 16-bit mono WAV at `audio.sample_rate`",
            "audio/pcm": "`audio.format: pcm` or `pcm_s16le`: raw s16le mono at `audio.sample_rate` (24 kHz default)",
        }
        self.responses["200"] = OpenAPIResponse(
            description="The audio, streamed with chunked transfer while synthesis runs",
            content={ct: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary", description=d))
                     for ct, d in binary.items()})


@dataclass
class _UploadOperation(Operation):
    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING)
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT, required=["file"], properties={
                "file": Schema(type=OpenAPIType.STRING, format="binary", description=(
                    "The voice's reference audio (wav, mp3, flac, ogg, m4a, webm; at most 10 MiB; 3-30 s of speech "
                    "after trimming). The voice is named after the file's stem.")),
                "name": Schema(type=OpenAPIType.STRING, description="Another name than the file's stem (extension)"),
                "ref_text": Schema(type=OpenAPIType.STRING, description=(
                    "The clip's exact transcript (extension); without it the voice is an x-vector-only clone")),
                "language": text,
            }))})


def _service(connection: Request | WebSocket) -> SpeechService:
    return connection.app.state.service


@get("/health", summary="Chatterbox: health", tags=TAGS, responses={
    503: ResponseSpec(Health, description="Still loading: `status` is \"loading\"", generate_examples=False)})
async def chatterbox_health(request: Request) -> Response[Health]:
    """`status` (healthy / loading), `loaded_models`, `device`, `version`; no API key needed."""
    body = health(getattr(request.app.state, "service", None))
    return Response(body, status_code=200 if body.status == "healthy" else 503)


@post("/api/tts", status_code=200, summary="Chatterbox: generate speech", tags=TAGS, guards=[require_api_key],
      description="Chatterbox's TTS request: `text`, `model` (standard, turbo, multilingual: the primary engine; "
                  "or a gateway model id), `language_id`, `voice` (`audio_prompt_path` names a stored voice by its "
                  "stem; `exaggeration` and `cfg_weight` are ignored), `audio` (`format` wav or pcm, "
                  "`sample_rate`).", responses=error_responses(400, 401, 404, 429, 500, 503, 504),
      operation_class=_AudioOperation)
async def chatterbox_tts(request: Request, data: TTSRequest) -> ClosingStream:
    service = _service(request)
    fmt, rate = format_of(data, "wav")
    params = speech_params(data, request.app, service, request_id_of(request.scope), fmt)
    stream, encoder = await open_with_encoder(service, params, fmt, rate)
    return ClosingStream(audio_body(stream, fmt, 1.0, encoder), media_type=content_type(fmt, rate),
                         headers={"X-Voice": stream.voice.id, "Cache-Control": "no-cache"})


@get("/api/voice/default", summary="Chatterbox: get the default voice", tags=TAGS, guards=[require_api_key],
     responses=error_responses(401))
async def chatterbox_get_default_voice(request: Request) -> DefaultVoice:
    return default_voice(request.app, _service(request))


@post("/api/voice/default", status_code=200, summary="Chatterbox: set the default voice", tags=TAGS,
      guards=[require_api_key], responses=error_responses(400, 401, 404),
      description="`voice_path` names a stored voice by its stem (\"my_voice.wav\" → my_voice); null or \"\" goes "
                  "back to the gateway's default. Server-wide, held in memory until the server restarts.")
async def chatterbox_set_default_voice(request: Request, data: DefaultVoiceRequest) -> DefaultVoice:
    return set_default_voice(request.app, _service(request), data.voice_path)


@get("/api/voices", summary="Chatterbox: list voices", tags=TAGS, guards=[require_api_key],
     responses=error_responses(401))
async def chatterbox_voices(request: Request) -> VoiceListing:
    return voice_listing(request.app, _service(request))


@post("/api/voices/upload", status_code=200, summary="Chatterbox: upload a voice file", tags=TAGS,
      guards=[require_api_key], request_max_body_size=MAX_CREATE_BODY, operation_class=_UploadOperation,
      description="Multipart `file`: imported and saved like POST /v1/audio/voices (needs the Qwen3 Base model), "
                  "with its rules: 403 past --max-voices, 409 when the name is taken, 413 over 10 MiB.",
      responses=error_responses(400, 401, 429, 503))
async def chatterbox_upload(request: Request) -> Uploaded:
    return await upload_voice(request, _service(request), request_id_of(request.scope))


@websocket("/ws/tts")
async def chatterbox_socket(socket: WebSocket) -> None:
    """Chatterbox's streaming socket (`app.chatterbox.session`); auth is checked by the session."""
    await ChatterboxSession(socket, socket.app.state.settings).run()


ROUTES = [chatterbox_health, chatterbox_tts, chatterbox_get_default_voice, chatterbox_set_default_voice,
          chatterbox_voices, chatterbox_upload, chatterbox_socket]
