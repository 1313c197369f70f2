"""The voice catalogue: list, create (upload or design), look up, download the sample, delete; and
OpenAI's consent recordings (/v1/audio/voice_consents) that clones from audio may name.

The logic lives in `app.voices.serving` and `app.voices.consents`; these handlers parse, call it and answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter

from app.ops.auth import PUBLIC_LISTING
from app.ops.errors import handle_exception
from app.ops.openapi import error_responses
from app.ops.request_id import request_id_of
from app.speech.protocol import ErrorResponse
from app.voices import consents
from app.voices.protocol import (
    ConsentCard,
    ConsentDeleted,
    ConsentFields,
    ConsentPage,
    CreateVoiceRequest,
    UpdateConsentRequest,
    VoiceCard,
    VoiceDeleted,
    VoiceList,
)
from app.voices.serving import (
    MAX_CREATE_BODY,
    create_voice,
    find_maker,
    find_voice,
    list_cards,
    read_create_request,
    remove_voice,
    voice_card,
    voice_sample,
)
from engine.errors import Conflict
from engine.service import SpeechService


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    more = {403: "Shipped and built-in voices cannot be deleted; nothing can be created past --max-voices",
            409: "A voice by that name exists already (`x-should-retry: false`: retrying cannot help)",
            413: "The audio sample is larger than 10 MiB"}
    shared = error_responses(*(s for s in statuses if s not in more))
    return {**shared, **{s: ResponseSpec(data_container=ErrorResponse, description=more[s], generate_examples=False)
                         for s in statuses if s in more}}


def _no_retry(request: Request, exc: Exception) -> Response:
    # The OpenAI SDK retries 409 by default; a name clash stays a clash, so tell it not to.
    response = handle_exception(request, exc)
    response.headers["x-should-retry"] = "false"
    return response


@get("/v1/audio/voices", summary="List voices", responses=_errors(401), opt={PUBLIC_LISTING: True},
     description="Every voice, under `data` (OpenAI's list shape) and again under `voices` (what Open WebUI "
                 "reads). Readable without a key when the server runs with `--public-listings`.")
async def list_voices(request: Request) -> VoiceList:
    cards = list_cards(request.app.state.service)
    return VoiceList(data=cards, voices=cards)


@dataclass
class CreateVoiceOperation(Operation):
    """Documents the two bodies: multipart (clone from `audio_sample`) and JSON (design)."""

    def __post_init__(self) -> None:
        fields = _struct_properties(CreateVoiceRequest)
        audio = Schema(type=OpenAPIType.STRING, format="binary",
                       description="The voice to clone: wav, mp3, ogg/opus, flac, m4a/aac or webm; at most 10 MiB; "
                                   "3-30 s of speech after trimming silence")
        self.request_body = RequestBody(required=True, content={
            "multipart/form-data": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, properties={"audio_sample": audio, **fields}, required=["name"],
                description="With audio_sample: clone it (in context with ref_text, else x-vector only). "
                            "Without: design from description (or prompt), sample_text optional.")),
            "application/json": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, properties=fields, required=["name"],
                description="Design a voice: name, description (or prompt), sample_text optional")),
        })


def _struct_properties(struct: type) -> dict[str, Schema]:
    """The OpenAPI properties of a flat msgspec struct (strings, numbers, booleans, enums), from msgspec."""
    kinds = {"string": OpenAPIType.STRING, "integer": OpenAPIType.INTEGER, "boolean": OpenAPIType.BOOLEAN}
    props: dict[str, Any] = msgspec.json.schema(struct)["$defs"][struct.__name__]["properties"]
    out = {}
    for name, spec in props.items():
        spec = next((s for s in spec.get("anyOf", [spec]) if s.get("type") != "null"), spec)
        out[name] = Schema(type=kinds[spec.get("type", "string")], enum=spec.get("enum"), min_length=spec.get("minLength"),
                           max_length=spec.get("maxLength"), minimum=spec.get("minimum"),
                           maximum=spec.get("maximum"), description=spec.get("description"))
    return out


@post("/v1/audio/voices", status_code=200, summary="Create a voice (upload or design)",
      description="Multipart `name` + `audio_sample` (+ `consent`, `ref_text`, `language`, `x_vector_only`) clones "
                  "a voice from audio: in context with `ref_text`, else from the speaker embedding alone "
                  "(`clone_mode` says which). `name` + `description` or OpenAI's `type: prompt` + `prompt` (JSON "
                  "or multipart; `sample_text`/`script_hint` optional) designs one with the VoiceDesign model and "
                  "clones the rendered sample. Needs the Qwen3 Base model.",
      request_max_body_size=MAX_CREATE_BODY, operation_class=CreateVoiceOperation,
      exception_handlers={Conflict: _no_retry}, responses=_errors(400, 401, 403, 409, 413, 429, 503))
async def create_voice_route(request: Request) -> VoiceCard:
    data, audio = await read_create_request(request)
    settings = request.app.state.settings
    return await create_voice(request.app.state.service, data, audio, request_id_of(request.scope),
                              max_voices=settings.max_voices, require_consent=settings.require_consent)


@get("/v1/audio/voices/{voice_id:str}", summary="Get a voice", responses=_errors(400, 401, 404))
async def get_voice(request: Request, voice_id: str) -> VoiceCard:
    service: SpeechService = request.app.state.service
    return voice_card(find_voice(service, voice_id), find_maker(service))


@get("/v1/audio/voices/{voice_id:str}/sample", summary="Download a clone voice's reference clip", media_type="audio/wav",
     responses=_errors(400, 401, 404))
async def get_voice_sample(request: Request, voice_id: str) -> Response[bytes]:
    voice, data = await voice_sample(request.app.state.service, voice_id)
    # The stored id, never the URL's text: lookups forgive case and whitespace, a header cannot carry
    # control characters or line separators.
    return Response(data, media_type="audio/wav",
                    headers={"Content-Disposition": f'attachment; filename="{voice.id}.wav"'})


@delete("/v1/audio/voices/{voice_id:str}", status_code=200, summary="Delete an uploaded or designed voice",
        responses=_errors(400, 401, 403, 404))
async def delete_voice_route(request: Request, voice_id: str) -> VoiceDeleted:
    return await remove_voice(request.app.state.service, voice_id)


# -- consent recordings -----------------------------------------------------------------------------
@dataclass
class CreateConsentOperation(Operation):
    """Documents the multipart body: `name`, `language` and the `recording` file."""

    def __post_init__(self) -> None:
        recording = Schema(type=OpenAPIType.STRING, format="binary",
                           description="The person agreeing to have their voice cloned: wav, mp3, ogg/opus, flac, "
                                       "m4a/aac or webm; at most 10 MiB; 3-30 s of speech after trimming silence")
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.OBJECT, required=["name", "language", "recording"],
                          properties={**_struct_properties(ConsentFields), "recording": recording}))})


_CONSENT = "/v1/audio/voice_consents/{consent_id:str}"


@post("/v1/audio/voice_consents", status_code=200, summary="Upload a consent recording",
      description="OpenAI's consent recording for custom voices. Stored beside the voices (shared by every "
                  "process using the folder); its id goes in `consent` when creating a voice.",
      request_max_body_size=MAX_CREATE_BODY, operation_class=CreateConsentOperation,
      responses=_errors(400, 401, 403, 413, 429, 503))
async def create_consent_route(request: Request) -> ConsentCard:
    return await consents.create_consent(request)


@get("/v1/audio/voice_consents", summary="List consent recordings", responses=_errors(400, 401),
     description="OpenAI's cursor page, newest first: pass `last_id` as `after` while `has_more`.")
async def list_consents_route(
    request: Request,
    limit: Annotated[int, Parameter(ge=1, le=consents.MAX_PAGE, description="consents per page")] = 20,
    after: Annotated[str | None, Parameter(max_length=64, description="the last id of the previous page")] = None,
    order: Annotated[Literal["asc", "desc"], Parameter(description="by creation time")] = "desc",
) -> ConsentPage:
    return await consents.list_consents(request, limit, after, order)


@get(_CONSENT, summary="Get a consent recording", responses=_errors(401, 404))
async def get_consent_route(request: Request, consent_id: str) -> ConsentCard:
    return await consents.get_consent(request, consent_id)


@post(_CONSENT, status_code=200, summary="Rename a consent recording", responses=_errors(400, 401, 404))
async def update_consent_route(request: Request, consent_id: str, data: UpdateConsentRequest) -> ConsentCard:
    return await consents.rename_consent(request, consent_id, data.name)


@delete(_CONSENT, status_code=200, summary="Delete a consent recording", responses=_errors(401, 404),
        description="Voices that name it keep their record of it.")
async def delete_consent_route(request: Request, consent_id: str) -> ConsentDeleted:
    return await consents.delete_consent(request, consent_id)


VOICE_ROUTES = [list_voices, create_voice_route, get_voice, get_voice_sample, delete_voice_route,
                create_consent_route, list_consents_route, get_consent_route, update_consent_route,
                delete_consent_route]
