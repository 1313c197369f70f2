"""POST /v1/audio/speech/batch."""

from __future__ import annotations

from litestar import Request, Response, post

from app.batch_serving import as_json, as_zip, run_batch
from app.openapi_docs import JsonOrZipOperation, error_responses
from app.protocol import BatchRequest, BatchResponse
from app.request_id import request_id_of
from engine.service import SpeechService


@post(
    "/v1/audio/speech/batch",
    status_code=200,
    summary="Create speech for many inputs",
    description="1-64 speech requests at bulk priority (interactive requests keep their latency). "
    "`output: json` answers with base64 audio per item; `output: zip` with an archive of files and "
    "results.json. A failed item carries its OpenAI error; the others still succeed.",
    responses=error_responses(400, 401),
    operation_class=JsonOrZipOperation,
)
async def create_speech_batch(request: Request, data: BatchRequest) -> Response:
    service: SpeechService = request.app.state.service
    settings = request.app.state.settings
    # Bulk work never takes the last slot (see AdmissionQueue), so the batch runs one item fewer.
    results = await run_batch(service, data, request_id_of(request.scope),
                              parallel=max(1, settings.max_concurrent - 1), timeout=settings.request_timeout)
    if data.output == "zip":
        return Response(as_zip(results), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="speech-batch.zip"'})
    return Response(BatchResponse(data=as_json(results)))
