"""POST /v1/audio/speech: validate, admit, stream."""

from __future__ import annotations

from litestar import Request, post

from app.audio.encoding import content_type
from app.ops.closing_stream import ClosingStream
from app.ops.openapi import AudioStreamOperation, error_responses
from app.ops.request_id import request_id_of
from app.speech.protocol import SpeechRequest
from app.speech.serving import audio_body, open_with_encoder, sample_rate_of, speech_params, sse_body
from engine.service import SpeechService


@post(
    "/v1/audio/speech",
    status_code=200,
    summary="Create speech",
    description="OpenAI-compatible text to speech, streamed with chunked transfer while synthesis runs.",
    responses=error_responses(400, 401, 404, 429, 500, 503, 504),
    operation_class=AudioStreamOperation,
)
async def create_speech(request: Request, data: SpeechRequest) -> ClosingStream:
    service: SpeechService = request.app.state.service
    params = await speech_params(data, request_id_of(request.scope), service,
                                 require_consent=request.app.state.settings.require_consent)
    rate = sample_rate_of(data)
    stream, encoder = await open_with_encoder(service, params, data.response_format, rate)
    headers = {"X-Voice": stream.voice.id, "Cache-Control": "no-cache"}
    if data.stream_format == "sse":
        return ClosingStream(sse_body(stream, data.response_format, data.speed, encoder),
                             media_type="text/event-stream", headers=headers)
    return ClosingStream(audio_body(stream, data.response_format, data.speed, encoder),
                         media_type=content_type(data.response_format, rate), headers=headers)
