"""Serving logic of POST /v1/audio/speech/batch: many utterances, bulk priority, per-item results.

Items run a few at a time, each holding a bulk-priority admission slot, so interactive requests
overtake them in the queue and on the engine workers. A busy queue makes an item wait and retry
instead of failing: a batch is patient by nature. One item's failure never fails the others.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import msgspec

from app.audio.encoding import encode_stream
from app.batch.protocol import BatchItemResult, BatchRequest
from app.ops.errors import speech_error_body
from app.speech.protocol import ErrorDetail, SpeechRequest, WordTimestamp
from app.speech.serving import _samples, sample_rate_of, to_params
from engine.base import Priority
from engine.errors import Overloaded, SpeechError
from engine.service import SpeechService
from engine.words import SentenceWords

log = logging.getLogger("app.batch")
EXTENSIONS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav", "pcm": "pcm", "ulaw": "ulaw",
              "alaw": "alaw"}


@dataclass(frozen=True)
class _Spoken:
    audio: bytes
    seconds: float
    voice: str
    words: list[WordTimestamp] | None  # None: not asked for


async def _synthesize(service: SpeechService, item: SpeechRequest, request_id: str, deadline: float) -> _Spoken:
    params = replace(to_params(item, request_id, set(service.engines)), priority=Priority.BULK)
    while True:
        try:
            stream = await service.open(params)
            break
        except Overloaded as e:
            if time.monotonic() + (e.retry_after or 1) > deadline:
                raise
            await asyncio.sleep(e.retry_after or 1)
    body = encode_stream(_samples(stream), item.response_format, item.speed, sample_rate=sample_rate_of(item))
    pieces: list[bytes] = []
    words: list[dict] | None = [] if params.timestamps else None
    try:
        async for piece in body:
            if isinstance(piece, SentenceWords):
                words.extend(piece.wire(item.speed))  # type: ignore[union-attr]
            else:
                pieces.append(piece)
    finally:
        await body.aclose()  # type: ignore[attr-defined]
        await stream.aclose()
    return _Spoken(b"".join(pieces), stream.audio_seconds / item.speed, stream.voice.id,
                   None if words is None else msgspec.convert(words, list[WordTimestamp]))


async def run_batch(service: SpeechService, batch: BatchRequest, request_id: str, *, parallel: int,
                    timeout: float) -> AsyncIterator[tuple[BatchItemResult, bytes]]:
    """Every item's result (and encoded audio), in input order, each as soon as it and those before it are done.

    Closing the iterator (the client went away) cancels every item still queued or synthesizing.
    """
    gate = asyncio.Semaphore(max(1, parallel))
    deadline = time.monotonic() + timeout

    async def one(index: int, item: SpeechRequest) -> tuple[BatchItemResult, bytes]:
        async with gate:
            try:
                spoken = await _synthesize(service, item, f"{request_id}-{index}", deadline)
            except SpeechError as e:
                detail = msgspec.convert(speech_error_body(e)["error"], ErrorDetail)
                return BatchItemResult(index=index, status="error", error=detail), b""
            except Exception:  # noqa: BLE001 - one broken item must not sink the batch
                log.exception("batch %s: item %d failed", request_id, index)
                detail = ErrorDetail(message="internal error", type="server_error", param=None, code="internal_error")
                return BatchItemResult(index=index, status="error", error=detail), b""
        name = f"{index:03d}.{EXTENSIONS[item.response_format]}"
        return BatchItemResult(index=index, status="ok", format=item.response_format, file=name,
                               duration_s=round(spoken.seconds, 3), voice=spoken.voice, words=spoken.words), spoken.audio

    tasks = [asyncio.create_task(one(i, item)) for i, item in enumerate(batch.items)]
    try:
        for task in tasks:
            yield await task
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def json_body(results: AsyncIterator[tuple[BatchItemResult, bytes]]) -> AsyncIterator[bytes]:
    """`{"object": "list", "data": [...]}` written item by item: a 64-item batch of long pcm audio never
    sits in memory as one response."""
    yield b'{"object":"list","data":['
    first = True
    async for result, data in results:
        yield (b"" if first else b",") + msgspec.json.encode(replace_audio(result, data))
        first = False
    yield b"]}"


def replace_audio(result: BatchItemResult, data: bytes) -> BatchItemResult:
    if result.status != "ok":
        return result
    return msgspec.structs.replace(result, audio=base64.b64encode(data).decode(), file=None)


class _Pieces:
    """A write-only, unseekable file: zipfile then streams (data descriptors) and we hand on what it wrote."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


async def zip_body(results: AsyncIterator[tuple[BatchItemResult, bytes]]) -> AsyncIterator[bytes]:
    """One file per successful item plus `results.json` listing every item, errors included; streamed."""
    out = _Pieces()
    listing = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # audio is already compressed
        async for result, data in results:
            if result.status == "ok" and result.file:
                archive.writestr(result.file, data)
                yield out.take()
            listing.append(msgspec.to_builtins(result))
        archive.writestr("results.json", json.dumps({"object": "list", "data": listing}, indent=1))
    yield out.take()
