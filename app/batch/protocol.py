"""Wire structs of POST /v1/audio/speech/batch (msgspec)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from app.speech.protocol import ErrorDetail, SpeechRequest, WordTimestamp


class BatchRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/speech/batch: up to 64 speech requests, synthesized at bulk priority."""

    items: Annotated[list[SpeechRequest], Meta(min_length=1, max_length=64)]
    output: Literal["json", "zip"] = "json"


class BatchItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: Literal["ok", "error"]
    format: str | None = None
    audio: str | None = None  # base64 of the encoded file (json output)
    file: str | None = None  # its name inside the archive (zip output)
    duration_s: float | None = None
    voice: str | None = None
    words: list[WordTimestamp] | None = None  # when the item asked for timestamp_granularities ["word"]
    error: ErrorDetail | None = None


class BatchResponse(msgspec.Struct):
    data: list[BatchItemResult]
    object: str = "list"
