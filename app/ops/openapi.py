"""What the OpenAPI document says beyond what Litestar infers from a handler's signature.

- `error_responses(400, 404, ...)`: OpenAI's error body for each status (pass as a route's `responses=`).
- `AudioStreamOperation`: a route's `operation_class=` for handlers that return a `Stream` of audio;
  Litestar can name only one media type per response, our 200 is any of the six response formats
  or Server-Sent Events, chosen by the request body.
- `OptionalBodyOperation`: for handlers whose JSON body may be left out.
- `docs_ui()`: Swagger UI at `/schema`, its assets served from the swagger-ui-bundle-v2 package under
  `/schema/assets` (Litestar's default loads them from a CDN: no API docs offline).
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Router
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from app.audio.encoding import CONTENT_TYPES
from app.speech.protocol import ErrorResponse

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


_STR = Schema(type=OpenAPIType.STRING)
_INT = Schema(type=OpenAPIType.INTEGER)
_ERROR_DETAIL = Schema(type=OpenAPIType.OBJECT, required=["message", "type", "param", "code"], properties={
    "message": _STR, "type": _STR, "param": Schema(one_of=[_STR, Schema(type=OpenAPIType.NULL)]),
    "code": Schema(one_of=[_STR, Schema(type=OpenAPIType.NULL)])})
SSE_PAYLOADS: dict[str, Schema] = {
    "speech.audio.delta": Schema(type=OpenAPIType.OBJECT, required=["type", "audio"], properties={
        "type": Schema(const="speech.audio.delta"),
        "audio": Schema(type=OpenAPIType.STRING, content_encoding="base64",
                        description="the next bytes of the stream in `response_format`")}),
    "speech.audio.done": Schema(type=OpenAPIType.OBJECT, required=["type", "usage"], properties={
        "type": Schema(const="speech.audio.done"),
        "usage": Schema(type=OpenAPIType.OBJECT, required=["input_tokens", "output_tokens", "total_tokens"],
                        properties={"input_tokens": _INT, "output_tokens": _INT, "total_tokens": _INT})}),
    "speech.audio.error": Schema(type=OpenAPIType.OBJECT, required=["type", "error"], properties={
        "type": Schema(const="speech.audio.error"), "error": _ERROR_DETAIL},
        description="synthesis failed after the first byte; the stream ends here"),
}


def _sse_event() -> Schema:
    """One Server-Sent Event (OpenAPI 3.1: the schema of an event stream describes each event)."""
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["event", "data"],
        properties={
            "event": Schema(type=OpenAPIType.STRING, enum=list(SSE_PAYLOADS)),
            "data": Schema(type=OpenAPIType.STRING, content_media_type="application/json",
                           content_schema=Schema(one_of=list(SSE_PAYLOADS.values())),
                           description="JSON whose `type` repeats the event name"),
        },
        description="`speech.audio.delta` events, then `speech.audio.done`, or `speech.audio.error` if synthesis "
                    "fails after the first byte",
    )


_RATE_NOTES = {
    "ulaw": " (raw G.711 mu-law bytes, 8 kHz; at another `sample_rate` the type reads `audio/basic;rate=N`)",
    "alaw": " (raw G.711 A-law bytes, 8 kHz; at another `sample_rate` the type reads `audio/x-alaw-basic;rate=N`)",
    "pcm": " (s16le mono at `sample_rate`, 24 kHz by default)",
}


def _audio_content() -> dict[str, OpenAPIMediaType]:
    content = {
        media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary",
                                                   description=f"`response_format: {fmt}`{_RATE_NOTES.get(fmt, '')}"))
        for fmt, media_type in CONTENT_TYPES.items()
    }
    content["text/event-stream"] = OpenAPIMediaType(schema=_sse_event())
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


@dataclass
class JsonOrZipOperation(Operation):
    """Adds `application/zip` beside the handler's JSON 200, for routes with an `output: zip` choice."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["application/zip"] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, format="binary", description="with `output: zip`"))


@dataclass
class OptionalBodyOperation(Operation):
    """For handlers whose JSON body may be left out (`data: X | None = None`); Litestar marks every body required."""

    def __post_init__(self) -> None:
        if self.request_body is not None and not isinstance(self.request_body, Reference):
            self.request_body.required = False


DOCS_ASSETS = "/schema/assets"


def docs_ui() -> tuple[SwaggerRenderPlugin, Router]:
    """The render plugin (at `/schema` and `/schema/swagger`) and the router serving its files."""
    from litestar.static_files import create_static_files_router
    from swagger_ui_bundle import swagger_ui_path

    plugin = SwaggerRenderPlugin(
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>", path=["/", "/swagger"])
    assets = create_static_files_router(path=DOCS_ASSETS, directories=[swagger_ui_path], include_in_schema=False,
                                        name="docs-assets")
    return plugin, assets
