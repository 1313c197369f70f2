"""Health, readiness and the model list."""

from __future__ import annotations

import time

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from app.openapi_docs import error_responses
from app.protocol import ENGINE_MODELS, OPENAI_MODELS, ModelCard, ModelList
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
    if not ready:
        body["reason"] = service.primary.status().reason
    return Response(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})


@get("/v1/models", summary="List models", responses=error_responses(401))
async def list_models(request: Request) -> ModelList:
    service: SpeechService = request.app.state.service
    owner = "qwen-speech-gateway"
    ids = [*OPENAI_MODELS, *(m for m, e in ENGINE_MODELS.items() if e in service.engines)]
    return ModelList(data=[ModelCard(id=m, created=_STARTED, owned_by=owner) for m in ids])
