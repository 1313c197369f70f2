"""POST /v1/audio/speech/batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from litestar import Request, post

from app.batch.protocol import BatchRequest
from app.batch.serving import json_body, run_batch, zip_body
from app.ops.closing_stream import ClosingStream
from app.ops.openapi import JsonOrZipOperation, error_responses
from app.ops.request_id import request_id_of
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
async def create_speech_batch(request: Request, data: BatchRequest) -> ClosingStream:
    service: SpeechService = request.app.state.service
    settings = request.app.state.settings
    # Bulk work never takes the last slot (see AdmissionQueue), so the batch runs one item fewer.
    # Streamed as items finish; a client that leaves closes the body, which cancels the items.
    slots = service.admission[service.primary.name].max_active
    results = run_batch(service, data, request_id_of(request.scope), parallel=max(1, slots - 1),
                        timeout=settings.request_timeout)

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(results):
            async for piece in (zip_body if data.output == "zip" else json_body)(results):
                yield piece

    if data.output == "zip":
        return ClosingStream(body(), media_type="application/zip",
                             headers={"Content-Disposition": 'attachment; filename="speech-batch.zip"'})
    return ClosingStream(body(), media_type="application/json")
