"""What the OpenAPI document says beyond what Litestar infers from a handler's signature.

- `error_responses(400, 404, ...)`: OpenAI's error body for each status (pass as a route's `responses=`).
- `AudioStreamOperation`: a route's `operation_class=` for handlers that return a `Stream` of audio;
  Litestar can name only one media type per response, our 200 is any of the six response formats
  or Server-Sent Events, chosen by the request body.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

from .encoding import CONTENT_TYPES
from .protocol import ErrorResponse

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: OpenAI's error body, `param` names the offending field",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`)",
    404: "No voice (or resource) by that name",
    429: "Busy: the admission queue is full or the wait was too long; retry after `Retry-After` seconds",
    500: "Internal error",
    503: "The engine is not loaded yet or failed to load; retry after `Retry-After` seconds",
    504: "Synthesis passed its deadline before the first audio",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAI's error body (`ErrorResponse`) under each of `statuses`."""
    return {
        status: ResponseSpec(data_container=ErrorResponse, description=ERROR_DESCRIPTIONS[status],
                             generate_examples=False)
        for status in statuses
    }


_SSE_DESCRIPTION = (
    "With `stream_format: sse`: `event: <type>` and `data: <json>` per event: `speech.audio.delta` "
    "`{\"type\", \"audio\": <base64 chunk of the response_format>}`, then `speech.audio.done` "
    "`{\"type\", \"usage\": {input_tokens, output_tokens, total_tokens}}`, or `speech.audio.error` "
    "`{\"type\", \"error\": {message, type, param, code}}` when synthesis fails after the first byte."
)


def _audio_content() -> dict[str, OpenAPIMediaType]:
    content = {
        media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary",
                                                   description=f"`response_format: {fmt}`"))
        for fmt, media_type in CONTENT_TYPES.items()
    }
    content["text/event-stream"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING,
                                                                  description=_SSE_DESCRIPTION))
    return content


@dataclass
class AudioStreamOperation(Operation):
    """Rewrites the 200 response: chunked audio in the requested format, or SSE."""

    def __post_init__(self) -> None:
        if not self.responses or "200" not in self.responses:
            return
        self.responses["200"] = OpenAPIResponse(
            description="Audio streamed with chunked transfer while synthesis runs. If synthesis fails after "
                        "the first byte, raw audio ends early (the body is cut short) and SSE ends with "
                        "`speech.audio.error`.",
            content=_audio_content(),
            headers={"X-Voice": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING),
                                              description="Id of the voice that speaks")},
        )
