"""Health, readiness and the model list."""

from __future__ import annotations

import time

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from app.ops.auth import PUBLIC_LISTING
from app.ops.openapi import error_responses
from app.speech.protocol import ENGINE_MODELS, OPENAI_MODELS, AudioModelList, ModelCard, ModelList, is_openai_model
from app.transcription.protocol import OPENAI_MODELS as TRANSCRIPTION_MODELS
from engine.errors import InvalidRequest
from engine.service import SpeechService

_STARTED = int(time.time())


@get("/healthz", summary="Liveness", include_in_schema=True)
async def healthz() -> dict:
    return {"status": "ok"}


@get("/readyz", summary="Readiness: 200 once the primary engine can synthesize",
     responses={503: ResponseSpec(dict, description="Not ready: `reason` says why; retry after `Retry-After`",
                                  generate_examples=False)})
async def readyz(request: Request) -> Response:
    service: SpeechService | None = getattr(request.app.state, "service", None)
    if service is None:
        return Response({"status": "starting", "engines": []}, status_code=503, headers={"Retry-After": "2"})
    engines = [
        {"name": s.name, "ready": s.ready, "reason": s.reason, "loaded": list(s.loaded), "details": s.details}
        for s in service.status()
    ]
    ready = service.ready
    body = {"status": "ready" if ready else "not_ready", "primary": service.primary.name, "engines": engines}
    if service.transcriber is not None:  # optional: its state never makes the gateway unready
        recognizer = service.transcriber.recognizer
        body["recognizer"] = {"model": service.transcriber.model, "loaded": recognizer.loaded,
                              "device": recognizer.config.device, "load_seconds": round(recognizer.load_seconds, 2)}
    if not ready:
        body["reason"] = service.primary.status().reason
    return Response(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"  # OpenAI's code for an unknown model


def _card(model_id: str) -> ModelCard:
    return ModelCard(id=model_id, created=_STARTED, owned_by="qwen-speech-gateway")


def _models(service: SpeechService) -> list[ModelCard]:
    return [_card(m) for m in [*OPENAI_MODELS, *(m for m, e in ENGINE_MODELS.items() if e in service.engines)]]


def _transcription_models(service: SpeechService) -> list[ModelCard]:
    return [_card(m) for m in TRANSCRIPTION_MODELS] if service.transcriber is not None else []


@get("/v1/models", summary="List models", responses=error_responses(401),
     description="Speech models, and with a recognizer (`--asr-model`) the transcription models too.")
async def list_models(request: Request) -> ModelList:
    service = request.app.state.service
    return ModelList(data=_models(service) + _transcription_models(service))


@get("/v1/audio/models", summary="List speech models (Open WebUI's listing)", responses=error_responses(401),
     description="The models of `GET /v1/models`, under `data` and again under `models` (what Open WebUI "
                 "reads). Readable without a key when the server runs with `--public-listings`.",
     opt={PUBLIC_LISTING: True})
async def list_audio_models(request: Request) -> AudioModelList:
    models = _models(request.app.state.service)
    return AudioModelList(data=models, models=models)


@get("/v1/models/{model_id:str}", summary="Retrieve a model", responses=error_responses(401, 404))
async def retrieve_model(request: Request, model_id: str) -> ModelCard:
    """One model of the list (the SDKs' `models.retrieve`); 404 with OpenAI's error body otherwise."""
    models = _models(request.app.state.service) + _transcription_models(request.app.state.service)
    card = next((m for m in models if m.id == model_id), None)
    if card is None and is_openai_model(model_id):  # a snapshot id the list leaves out (a dated one)
        card = _card(model_id)
    if card is None:
        raise ModelNotFound(f"The model {model_id!r} does not exist here; available: "
                            f"{', '.join(m.id for m in models)}", param="model")
    return card
