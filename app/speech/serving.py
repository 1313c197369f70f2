"""Serving logic of POST /v1/audio/speech: request → SpeechParams, and the two response bodies.

After the first byte there is no status code left to send: SSE ends with a `speech.audio.error`
event, raw audio is cut short (the client sees a truncated chunked body) and the failure is logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import msgspec
import numpy as np

from app.audio.encoding import AudioEncoder, encode_stream, make_encoder, output_rate
from app.ops.errors import error_body, speech_error_body
from app.speech.protocol import ENGINE_MODELS, OPENAI_MODELS, SpeechRequest, Usage, is_openai_model
from app.voices.serving import inline_voice
from engine.base import Priority, SamplingParams, Voice
from engine.errors import InvalidRequest, SpeechError
from engine.languages import normalize_language
from engine.service import SpeechParams, SpeechService, SpeechStream
from engine.words import SentenceWords

log = logging.getLogger("app.speech")
FRAME_RATE = 12.5  # Qwen3 codec frames per second: the unit of output "tokens"


def model_engine(model: str, engines: set[str], any_engine: tuple[str, ...] = ()) -> str | None:
    """The engine a `model` id asks for (None: whichever engine the voice belongs to, as for OpenAI's
    names and a protocol's own `any_engine` names)."""
    key = model.strip().lower()
    if is_openai_model(key) or key in any_engine:
        return None
    engine = ENGINE_MODELS.get(key) or ("qwen" if key.startswith(("qwen3-tts", "qwen/qwen3-tts")) else None)
    if engine is None:
        known = ", ".join([*any_engine, *OPENAI_MODELS, *ENGINE_MODELS])
        raise InvalidRequest(f"unknown model {model!r}; use one of: {known}", param="model")
    if engine not in engines:
        raise InvalidRequest(f"model {model!r} needs the {engine} engine, which this server does not run",
                             param="model")
    return engine


def sample_rate_of(data: SpeechRequest) -> int:
    """The rate the audio goes out at; a 400 naming `sample_rate` for one the format cannot take."""
    try:
        return output_rate(data.response_format, data.sample_rate)
    except ValueError as e:
        raise InvalidRequest(str(e), param="sample_rate") from None


def to_params(data: SpeechRequest, request_id: str, engines: set[str], inline: Voice | None = None) -> SpeechParams:
    """`inline`: the clone voice built from `data.ref_audio` (see `speech_params`); a request with
    ref_audio and no such voice (batch items) is refused rather than spoken by another voice."""
    if data.ref_audio is not None and inline is None:
        raise InvalidRequest("ref_audio (inline cloning) is accepted on POST /v1/audio/speech only; upload the voice "
                             "(POST /v1/audio/voices) to use it here", param="ref_audio")
    sample_rate_of(data)  # refused before any synthesis
    return SpeechParams(
        text=data.input,
        voice=data.voice_name,
        language=normalize_language(data.language),
        instructions=data.instructions or None,
        seed=data.seed,
        sampling=SamplingParams(
            temperature=data.temperature,
            top_p=data.top_p,
            top_k=data.top_k,
            repetition_penalty=data.repetition_penalty,
            max_new_tokens=data.max_new_tokens,
            min_new_tokens=data.min_new_tokens,
            do_sample=data.do_sample,
        ),
        priority=Priority.BULK if data.priority == "bulk" else Priority.INTERACTIVE,
        request_id=request_id,
        engine=model_engine(data.model, engines),
        labels={"format": data.response_format, "stream_format": data.stream_format},
        voice_override=inline,
        timestamps=data.timestamps_param,
    )


async def speech_params(data: SpeechRequest, request_id: str, service: SpeechService, *,
                        require_consent: bool = False) -> SpeechParams:
    """`to_params`, with the one-off clone voice when the request carries `ref_audio` (then `voice` is ignored).
    `require_consent`: `--require-consent`, which refuses raw audio there (see `inline_voice`)."""
    sample_rate_of(data)  # a bad rate is refused before a clone is made
    if data.timestamps_param and data.stream_format != "sse":
        raise InvalidRequest("word timestamps travel as speech.timestamps.delta events: ask for stream_format "
                             "'sse' (an audio body has no place for them), or use POST /v1/audio/speech/batch",
                             param=data.timestamps_param)
    if data.ref_audio is None:
        return to_params(data, request_id, set(service.engines))
    if model_engine(data.model, set(service.engines)) not in (None, "qwen"):
        raise InvalidRequest(f"ref_audio needs a Qwen3 model; model {data.model!r} cannot clone", param="model")
    x_vector_only = bool(data.x_vector_only or data.x_vector_only_mode)
    voice = await inline_voice(service, data.ref_audio, data.ref_text, x_vector_only,
                               normalize_language(data.language), require_consent=require_consent)
    return replace(to_params(data, request_id, set(service.engines), inline=voice), engine=voice.engine)


async def open_with_encoder(service: SpeechService, params: SpeechParams,
                            response_format: str, sample_rate: int | None = None
                            ) -> tuple[SpeechStream, AudioEncoder]:
    """`service.open`, and the response's encoder made while the engine works on the first chunk.

    Opening a compressed format's codec costs ~1-2 ms of CPU (several on a busy machine); done after the
    first chunk it would delay the first byte, done before `open` it would delay the synthesis. A callback
    queued now runs once `open` waits for the first chunk, by which time the engine has the request.
    `sample_rate`: the output rate (checked by `sample_rate_of`; None: the format's default).
    """
    made: list[AudioEncoder] = []
    pending = asyncio.get_running_loop().call_soon(
        lambda: made.append(make_encoder(response_format, output_rate=sample_rate)))
    try:
        stream = await service.open(params)
    except BaseException:
        pending.cancel()
        for encoder in made:
            _close(encoder)
        raise
    return stream, made[0] if made else make_encoder(response_format, output_rate=sample_rate)


def _close(encoder: AudioEncoder) -> None:
    close = getattr(encoder, "close", None)
    if close is not None:
        close()


async def _samples(stream: SpeechStream) -> AsyncIterator[np.ndarray | SentenceWords]:
    """The stream's samples, and its sentences' words where they were asked for."""
    async for item in stream:
        yield item if isinstance(item, SentenceWords) else item.samples


async def audio_body(stream: SpeechStream, response_format: str, speed: float,
                     encoder: AudioEncoder | None = None) -> AsyncIterator[bytes]:
    """The encoded audio, chunk by chunk; closing it (client gone) cancels the synthesis."""
    body = encode_stream(_samples(stream), response_format, speed, encoder)
    try:
        async for data in body:
            yield data
    except SpeechError as e:
        log.error("request %s: synthesis failed mid-stream, body truncated: %s", stream.request.request_id, e)
        raise
    finally:
        await body.aclose()  # type: ignore[attr-defined]
        await stream.aclose()


def _event(kind: str, payload: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode({"type": kind, **payload}) + b"\n\n"


async def sse_body(stream: SpeechStream, response_format: str, speed: float,
                   encoder: AudioEncoder | None = None) -> AsyncIterator[bytes]:
    """`speech.audio.delta` events with base64 audio, then `speech.audio.done` with usage (12.5 Hz frames of the
    engine's audio: the same at any output rate or format). With word timestamps, each sentence's words as a
    `speech.timestamps.delta` event as soon as they are known, before any audio of the next sentence."""
    body = encode_stream(_samples(stream), response_format, speed, encoder)
    try:
        async for data in body:
            if isinstance(data, SentenceWords):
                yield _event("speech.timestamps.delta", {"words": data.wire(speed)})
                continue
            yield _event("speech.audio.delta", {"audio": base64.b64encode(data).decode()})
        frames = round(stream.audio_seconds * FRAME_RATE)
        chars = len(stream.request.text)
        usage = Usage(input_tokens=chars, output_tokens=frames, total_tokens=chars + frames)
        yield _event("speech.audio.done", {"usage": msgspec.to_builtins(usage)})
    except SpeechError as e:
        log.error("request %s: synthesis failed mid-stream: %s", stream.request.request_id, e)
        yield _event("speech.audio.error", speech_error_body(e))
    except Exception:  # noqa: BLE001 - the client must hear about it in-band
        log.exception("request %s: unexpected failure mid-stream", stream.request.request_id)
        yield _event("speech.audio.error", error_body("internal error during synthesis", status=500,
                                                      code="internal_error"))
    finally:
        await body.aclose()  # type: ignore[attr-defined]
        await stream.aclose()
