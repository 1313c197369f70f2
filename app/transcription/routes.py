"""POST /v1/audio/transcriptions and /v1/audio/translations: OpenAI's speech-to-text, on the configured recognizer.

The logic lives in `app.transcription.serving`; these handlers parse, call it and answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, RequestBody, Schema

from app.ops.closing_stream import ClosingStream
from app.ops.openapi import error_responses
from app.speech.protocol import ErrorResponse
from app.transcription.protocol import (
    MAX_PROMPT_CHARS,
    OPENAI_MODELS,
    TranscriptionJson,
    TranscriptionText,
    TranscriptionVerbose,
)
from app.transcription.serving import MAX_BODY, open_transcription, read_form, response_body, sse_body

_STR = Schema(type=OpenAPIType.STRING)
_FORMATS = ["json", "text", "srt", "verbose_json", "vtt"]


def _form(transcribe: bool) -> Schema:
    props = {
        "file": Schema(type=OpenAPIType.STRING, format="binary", description=(
            "The audio: wav, mp3, ogg/opus, flac, m4a/aac, mp4 or webm; at most 10 MiB and 600 s")),
        "model": Schema(type=OpenAPIType.STRING, min_length=1, max_length=256, examples=list(OPENAI_MODELS),
                        description="whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe (dated forms too) or the "
                                    "--asr-model value: all mean the configured recognizer"),
        "prompt": Schema(type=OpenAPIType.STRING, max_length=MAX_PROMPT_CHARS,
                         description="Text to guide spelling and style, or the transcript of the audio before"),
        "response_format": Schema(type=OpenAPIType.STRING, enum=_FORMATS, default="json"),
        "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1, default=0,
                              description="0: greedy, hotter only where decoding fails; above 0: that temperature"),
        "language": Schema(type=OpenAPIType.STRING, max_length=32,
                           description="ISO 639-1 code of the spoken language (detected when left out)"),
    }
    if transcribe:
        props["timestamp_granularities[]"] = Schema(
            type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING, enum=["word", "segment"]),
            description="With verbose_json: `segment` (default) and/or `word` times")
        props["stream"] = Schema(type=OpenAPIType.BOOLEAN, default=False,
                                 description="Server-Sent Events: transcript.text.delta per segment, then "
                                             "transcript.text.done (json or text only)")
    return Schema(type=OpenAPIType.OBJECT, properties=props, required=["file", "model"])


def _sse() -> Schema:
    text = Schema(type=OpenAPIType.STRING)
    return Schema(type=OpenAPIType.OBJECT, required=["data"], properties={"data": Schema(
        type=OpenAPIType.STRING, content_media_type="application/json", content_schema=Schema(one_of=[
            Schema(type=OpenAPIType.OBJECT, required=["type", "delta"],
                   properties={"type": Schema(const="transcript.text.delta"), "delta": text}),
            Schema(type=OpenAPIType.OBJECT, required=["type", "text"],
                   properties={"type": Schema(const="transcript.text.done"), "text": text}),
            Schema(type=OpenAPIType.OBJECT, required=["type", "error"],
                   properties={"type": Schema(const="error"), "error": Schema(type=OpenAPIType.OBJECT)})]))})


@dataclass
class TranscriptionOperation(Operation):
    """The multipart body, and the 200's other media types beside the JSON Litestar infers."""

    transcribe = True

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={
            "multipart/form-data": OpenAPIMediaType(schema=_form(self.transcribe))})
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.description = ("`json` (`{text, usage}`) or `verbose_json` (language, duration, segments and/or "
                              "words); `text`, `srt`, `vtt` as text" +
                              ("; Server-Sent Events with `stream=true`" if self.transcribe else ""))
            for media in ("text/plain; charset=utf-8", "text/vtt; charset=utf-8"):
                ok.content[media] = OpenAPIMediaType(schema=_STR)
            if self.transcribe:
                ok.content["text/event-stream"] = OpenAPIMediaType(schema=_sse())


@dataclass
class TranslationOperation(TranscriptionOperation):
    transcribe = False


async def _answer(request: Request, task: str) -> Response:
    form, audio = await read_form(request)
    stream = await open_transcription(request.app.state.service, form, audio, task)
    if form.stream:
        return ClosingStream(sse_body(stream), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    body, media_type = response_body(await stream.transcript(), form, task)
    return Response(body, media_type=media_type)


_ERRORS = {**error_responses(400, 401, 429, 500, 503), 413: ResponseSpec(
    data_container=ErrorResponse, description="The file is larger than 10 MiB", generate_examples=False)}


@post("/v1/audio/transcriptions", status_code=200, summary="Create transcription",
      description="OpenAI's speech to text on the configured recognizer (--asr-model, Whisper on CTranslate2).",
      request_max_body_size=MAX_BODY, operation_class=TranscriptionOperation, responses=_ERRORS)
async def create_transcription(request: Request) -> Response[TranscriptionJson | TranscriptionVerbose]:
    return await _answer(request, "transcribe")


@post("/v1/audio/translations", status_code=200, summary="Create translation",
      description="Speech in any language Whisper knows, as English text (a multilingual --asr-model is needed for "
                  "other languages than English).",
      request_max_body_size=MAX_BODY, operation_class=TranslationOperation, responses=_ERRORS)
async def create_translation(request: Request) -> Response[TranscriptionText | TranscriptionVerbose]:
    return await _answer(request, "translate")


TRANSCRIPTION_ROUTES = [create_transcription, create_translation]
