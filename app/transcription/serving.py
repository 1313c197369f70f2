"""Serving logic of POST /v1/audio/transcriptions and /v1/audio/translations.

multipart form → `TranscriptionForm` + the file's bytes → the recognizer's own admission slot, where
the upload is decoded (`engine.audio_import.decode_audio`: every container the voice upload reads, the
same bomb limits) and recognized on a thread → one of OpenAI's five response formats, or Server-Sent
Events (`transcript.text.delta` per Whisper segment, then `transcript.text.done`) with `stream=true`.
Everything that can be refused (fields, model, language, decoding, a busy or missing recognizer) is
refused before the first byte, with OpenAI's error body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec
import numpy as np
from litestar import Request
from litestar.datastructures import UploadFile

from app.ops.errors import error_body, invalid_field, speech_error_body
from app.ops.forms import audio_form
from app.transcription.formats import TEXT_FORMATS
from app.transcription.protocol import (
    DIARIZE_MODEL,
    OPENAI_MODEL,
    OPENAI_MODELS,
    SegmentCard,
    TextDelta,
    TextDone,
    TranscriptionForm,
    TranscriptionJson,
    TranscriptionText,
    TranscriptionVerbose,
    Usage,
    WordCard,
)
from app.voices.protocol import MAX_AUDIO_BYTES
from engine.asr import Segment, Transcript, TranscriptionService, TranscriptStream
from engine.asr.languages import language_code, language_name
from engine.asr.transcript import text_of
from engine.audio_import import decode_audio
from engine.base import SAMPLE_RATE
from engine.errors import InvalidRequest, PayloadTooLarge, SpeechError, Unavailable
from engine.service import SpeechService

log = logging.getLogger("app.transcription")

MAX_BODY = MAX_AUDIO_BYTES + 64 * 1024  # the largest file plus room for the form's framing and fields
NO_RECOGNIZER = ("speech recognition is off on this server: start it with --asr-model <folder, hub id or size "
                 "name, e.g. small.en> (see docs/transcription.md)")
_LISTS = {"timestamp_granularities", "include", "keywords", "languages", "known_speaker_names",
          "known_speaker_references"}  # repeated fields, sent by the SDKs as `name[]`


def transcriber_of(service: SpeechService) -> TranscriptionService:
    """The configured recognizer's service; 503 naming --asr-model when there is none."""
    if service.transcriber is None:
        raise Unavailable(NO_RECOGNIZER, param="model")
    return service.transcriber


async def read_form(request: Request) -> tuple[TranscriptionForm, bytes]:
    """The form's fields and the uploaded file's bytes; 400/413 naming the field at fault."""
    if request.content_type[0] != "multipart/form-data":
        raise InvalidRequest("send multipart/form-data with the audio as the `file` part (curl: -F file=@audio.mp3 "
                             "-F model=whisper-1)", param="file")
    fields: dict[str, object] = {}
    audio: bytes | None = None
    too_large = (f"the request is larger than {MAX_BODY // 1024} KiB; the file may be at most "
                 f"{MAX_AUDIO_BYTES // (1024 * 1024)} MiB")
    async with audio_form(request, "file", too_large) as form:
        for raw_key, values in form.dict().items():
            key = raw_key.removesuffix("[]")
            if key == "file":
                if len(values) != 1 or not isinstance(values[0], UploadFile):
                    raise InvalidRequest("file must be one file part (curl: -F file=@audio.mp3)", param="file")
                audio = await values[0].read(MAX_AUDIO_BYTES + 1)
            elif any(isinstance(v, UploadFile) for v in values):
                raise InvalidRequest(f"form field {key!r} must be text, not a file", param=key)
            elif key in _LISTS:
                fields[key] = [*fields.get(key, []), *values]  # type: ignore[list-item]
            elif len(values) != 1:
                raise InvalidRequest(f"form field {key!r} was given {len(values)} times", param=key)
            elif key == "stream":
                fields[key] = str(values[0]).strip().lower() in ("true", "1", "on", "yes")
            else:
                fields[key] = values[0]
    if audio is None:
        raise InvalidRequest("file (the audio to transcribe) is required", param="file")
    if len(audio) > MAX_AUDIO_BYTES:
        raise PayloadTooLarge(f"file is larger than {MAX_AUDIO_BYTES // (1024 * 1024)} MiB", param="file")
    try:
        return msgspec.convert(fields, TranscriptionForm, strict=False), audio
    except msgspec.ValidationError as e:
        raise invalid_field(e) from None


def check_model(model: str, transcriber: TranscriptionService) -> None:
    key = model.strip()
    if OPENAI_MODEL.match(key.lower()) or key == transcriber.model:
        return
    if DIARIZE_MODEL.match(key.lower()):
        raise InvalidRequest("speaker diarization is not available here; use whisper-1 or gpt-4o-transcribe",
                             param="model")
    raise InvalidRequest(f"unknown model {model!r}; use one of: {', '.join(OPENAI_MODELS)} (dated forms too) or "
                         f"{transcriber.model!r}: all mean this server's recognizer", param="model")


def decode_file(data: bytes) -> tuple[np.ndarray, int]:
    """The upload's samples and rate, read as the voice upload reads (every container, the same bomb limits);
    refusals name `file`."""
    return decode_audio(data, what="the file", param="file")[0], SAMPLE_RATE


async def open_transcription(service: SpeechService, form: TranscriptionForm, audio: bytes, task: str
                             ) -> TranscriptStream:
    """Validate, admit, decode and start; every refusal happens here, before a status is sent."""
    transcriber = transcriber_of(service)
    check_model(form.model, transcriber)
    granularities = set(form.timestamp_granularities)
    if granularities and form.response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities needs response_format verbose_json",
                             param="timestamp_granularities")
    if form.stream and form.response_format not in ("json", "text"):
        raise InvalidRequest("stream=true sends transcript.text.delta events: response_format must be json or text",
                             param="stream")
    language = language_code(form.language)  # for translations: the language spoken, a hint
    # Decoded on the recognizer's thread, inside its slot: a flood of uploads queues before it is decoded.
    return await transcriber.open(lambda: decode_file(audio), language=language, task=task, prompt=form.prompt,
                                  temperature=form.temperature, word_timestamps="word" in granularities)


def response_body(transcript: Transcript, form: TranscriptionForm, task: str) -> tuple[bytes, str]:
    """(body, media type) in `form.response_format`."""
    fmt = form.response_format
    if fmt in TEXT_FORMATS:
        media = "text/vtt; charset=utf-8" if fmt == "vtt" else "text/plain; charset=utf-8"
        return TEXT_FORMATS[fmt](transcript).encode(), media
    usage = Usage(seconds=round(transcript.duration, 3))
    if fmt == "json":
        body = TranscriptionJson(text=transcript.text, usage=usage) if task == "transcribe" \
            else TranscriptionText(text=transcript.text)
        return msgspec.json.encode(body), "application/json"
    granularities = set(form.timestamp_granularities) or {"segment"}
    verbose = TranscriptionVerbose(
        task=task,  # type: ignore[arg-type]
        language=language_name(transcript.language), duration=round(transcript.duration, 3), text=transcript.text,
        segments=[_segment_card(s) for s in transcript.segments] if "segment" in granularities else None,
        words=[WordCard(word=w.word, start=w.start, end=w.end) for w in transcript.words]
        if "word" in granularities else None,
        usage=usage if task == "transcribe" else None)
    return msgspec.json.encode(verbose), "application/json"


def _segment_card(s: Segment) -> SegmentCard:
    return SegmentCard(id=s.id, seek=round(s.start * 100), start=s.start, end=s.end, text=s.text, tokens=s.tokens,
                       temperature=s.temperature, avg_logprob=round(s.avg_logprob, 6),
                       compression_ratio=round(s.compression_ratio, 6), no_speech_prob=round(s.no_speech_prob, 6))


def _event(payload: msgspec.Struct | dict) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def sse_body(stream: TranscriptStream) -> AsyncIterator[bytes]:
    """One `transcript.text.delta` per recognized segment (their concatenation is the text), then
    `transcript.text.done` with the whole text. A failure after the first byte ends the stream with an
    `error` event in OpenAI's error body."""
    try:
        first = True
        async for segment in stream:
            delta = segment.text.lstrip() if first else segment.text
            if delta:
                first = False
                yield _event(TextDelta(delta=delta))
        yield _event(TextDone(text=text_of(stream.segments)))
    except SpeechError as e:
        log.error("transcription failed mid-stream: %s", e)
        yield _event({"type": "error", **speech_error_body(e)})
    except Exception:  # noqa: BLE001 - the client must hear about it in-band
        log.exception("transcription: unexpected failure mid-stream")
        yield _event({"type": "error", **error_body("internal error during transcription", status=500,
                                                     code="internal_error")})
    finally:
        await stream.aclose()
