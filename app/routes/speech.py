"""POST /v1/audio/speech: validate, admit, stream."""

from __future__ import annotations

from litestar import Request, post
from litestar.response import Stream

from app.encoding import CONTENT_TYPES
from app.openapi_docs import AudioStreamOperation, error_responses
from app.protocol import SpeechRequest
from app.request_id import request_id_of
from app.speech_serving import audio_body, open_with_encoder, speech_params, sse_body
from engine.service import SpeechService


@post(
    "/v1/audio/speech",
    status_code=200,
    summary="Create speech",
    description="OpenAI-compatible text to speech, streamed with chunked transfer while synthesis runs.",
    responses=error_responses(400, 401, 404, 429, 500, 503, 504),
    operation_class=AudioStreamOperation,
)
async def create_speech(request: Request, data: SpeechRequest) -> Stream:
    service: SpeechService = request.app.state.service
    params = await speech_params(data, request_id_of(request.scope), service)
    stream, encoder = await open_with_encoder(service, params, data.response_format)
    headers = {"X-Voice": stream.voice.id, "Cache-Control": "no-cache"}
    if data.stream_format == "sse":
        return Stream(sse_body(stream, data.response_format, data.speed, encoder), media_type="text/event-stream",
                      headers=headers)
    return Stream(audio_body(stream, data.response_format, data.speed, encoder),
                  media_type=CONTENT_TYPES[data.response_format], headers=headers)
