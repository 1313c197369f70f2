"""VoiceReader's tts-engine API: health, voices, speak jobs, cancel, warmup, and the events socket.

Every route takes the gateway's API keys as its bearer tokens (`require_api_key`; open when none are
configured) and answers refusals as `{"code", "message"}` JSON. With keys, the key a request or socket
presents is also its owner: jobs, events, the replay buffer and cancels are that key's (`owner_of`).
Jobs and events: `jobs.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from litestar import Request, Response, WebSocket, get, post, websocket
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from app.ops.auth import bearer_token, require_api_key
from app.ops.errors import validation_param
from app.ops.openapi import OptionalBodyOperation
from app.sockets.protocol import ProtocolError
from app.sockets.session import Credentials, IdleTimeout, WsChannel
from app.voicereader.jobs import JobHub, encode
from app.voicereader.protocol import (
    CLIENT_TYPES,
    DEFAULT_VOICE_ID,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    JOB_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    TIMEOUT,
    UNAUTHORIZED,
    ClientEvent,
    Connected,
    Error,
    JobNotFound,
    Ping,
    Pong,
    VoiceReaderCancelRequest,
    VoiceReaderCancelResponse,
    VoiceReaderError,
    VoiceReaderHealth,
    VoiceReaderJobs,
    VoiceReaderRuntime,
    VoiceReaderSpeakRequest,
    VoiceReaderSpeakResponse,
    VoiceReaderVoice,
    VoiceReaderVoices,
    VoiceReaderWarmupRequest,
    VoiceReaderWarmupResponse,
    error_code,
)
from engine.errors import InvalidRequest, SpeechError, Unavailable
from engine.languages import normalize_language
from engine.service import SpeechService

log = logging.getLogger("app.voicereader")

WS_PATH = "/v1/ws"

_DESCRIPTIONS = {
    400: "Invalid request (`code` INVALID_REQUEST): malformed JSON, a field out of range, nothing to speak",
    401: "Missing or wrong token (`code` UNAUTHORIZED): send `Authorization: Bearer <API key>`",
    404: "Unknown voice id (`code` VOICE_NOT_FOUND) or job id (`code` JOB_NOT_FOUND)",
    429: "Busy (`code` RATE_LIMITED): admission queue full or too many queued jobs; retry after `retry_after` s",
    503: "The engine is not loaded yet (`code` MODEL_NOT_READY); retry after `retry_after` s",
}


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(data_container=VoiceReaderError, description=_DESCRIPTIONS[status],
                                 generate_examples=False) for status in statuses}


def _error(status: int, code: str, message: str, retry_after: float | None = None,
           headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(VoiceReaderError(code=code, message=message, retry_after=retry_after), status_code=status,
                    headers=headers, media_type="application/json")


def handle_error(request: Request, exc: Exception) -> Response:
    """Every failure of a VoiceReader route as `{"code", "message"[, "retry_after"]}`."""
    if isinstance(exc, SpeechError):
        if exc.status >= 500:
            log.warning("voicereader %s failed: %s", request.url.path, exc.message)
        status = 400 if exc.status in (403, 409, 413) else exc.status
        return _error(status, error_code(exc), exc.message, exc.retry_after)
    if isinstance(exc, ValidationException):
        message, _ = validation_param(exc)
        return _error(400, INVALID_REQUEST, message)
    if isinstance(exc, NotAuthorizedException):
        return _error(401, UNAUTHORIZED, exc.detail, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, HTTPException):
        code = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 408: TIMEOUT}.get(exc.status_code, INVALID_REQUEST)
        status = exc.status_code if exc.status_code < 500 else 500
        return _error(status, code if status < 500 else INTERNAL_ERROR, exc.detail)
    if isinstance(exc, RecursionError):
        return _error(400, INVALID_REQUEST, "the JSON body is nested too deeply")
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, INTERNAL_ERROR, "internal server error")


_COMMON = {"guards": [require_api_key], "exception_handlers": {Exception: handle_error}, "tags": ["VoiceReader"]}


def hub_of(app: object) -> JobHub:
    state = app.state  # type: ignore[attr-defined]
    hub = getattr(state, "voicereader", None)
    if hub is None:
        hub = state.voicereader = JobHub(state.service, state.settings.ws_max_queued_utterances)
    return hub


def owner_of(app: object, token: str | None) -> str | None:
    """Whose jobs a caller sees: None on a server without keys (one user), else a digest of its key
    (checked by the guard or the socket's verdict before this is asked; the key itself is not kept)."""
    if not app.state.api_keys or not token:  # type: ignore[attr-defined]
        return None
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _owner(request: Request) -> str | None:
    return owner_of(request.app, bearer_token(request.headers.get("authorization")))


def _ws_url(request: Request) -> str:
    scheme = "wss" if request.url.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{request.url.netloc}{WS_PATH}"


@get("/v1/health", summary="VoiceReader: health and runtime", responses=_errors(401), sync_to_thread=False,
     **_COMMON)
def health(request: Request) -> VoiceReaderHealth:
    """The primary engine as `runtime.backend` (never a mock fallback: `fallback_active` is always false),
    its readiness and reason (`runtime.detail`), and the state of `POST /v1/warmup`. `jobs` counts the
    caller's own (with API keys, the jobs and sockets of its key)."""
    service: SpeechService = request.app.state.service
    hub = hub_of(request.app)
    owner = _owner(request)
    current = hub.current_of(owner)
    statuses = service.status()
    primary = service.primary.status()
    device = str(primary.details.get("device", "cpu"))
    return VoiceReaderHealth(
        status="ok" if primary.ready else "loading",
        ready=primary.ready,
        active_model_id=primary.loaded[0] if primary.loaded else primary.name,
        device=device,
        ws_url=_ws_url(request),
        runtime=VoiceReaderRuntime(backend=primary.name, ready=primary.ready, fallback_active=False,
                        detail=primary.reason or "ready", warmup=hub.warmup.state(),
                        engines=[{"name": s.name, "ready": s.ready, "reason": s.reason, "loaded": list(s.loaded)}
                                 for s in statuses]),
        jobs=VoiceReaderJobs(current=current.id if current else None, queued=hub.queued(owner),
                             listeners=hub.listening(owner), buffered_events=hub.buffered(owner)),
    )


@get("/v1/voices", summary="VoiceReader: voices", responses=_errors(401), sync_to_thread=False, **_COMMON)
def voices(request: Request) -> VoiceReaderVoices:
    """`"0"`, the default voice, then every gateway voice under its own id."""
    service: SpeechService = request.app.state.service
    default = service.registry.resolve(None)
    listed = [VoiceReaderVoice(voice_id=DEFAULT_VOICE_ID, display_name=f"Default ({default.name})", language=default.language,
                        engine=default.engine, kind=default.kind, default=True)]
    listed += [VoiceReaderVoice(voice_id=v.id, display_name=v.name, language=v.language, engine=v.engine, kind=v.kind,
                         default=False) for v in service.registry.list()]
    return VoiceReaderVoices(voices=listed)


@post("/v1/speak", summary="VoiceReader: start a speak job", status_code=200,
      responses=_errors(400, 401, 404, 429, 503), **_COMMON)
async def speak(request: Request, data: VoiceReaderSpeakRequest) -> VoiceReaderSpeakResponse:
    """Start reading `text` aloud; the audio arrives as `AUDIO_CHUNK` events on the events socket
    (`ws_url`), then `JOB_DONE` (or `JOB_ERROR`, `JOB_CANCELED`). A job that can start at once is
    answered once its first chunk is admitted; while another job runs it is queued (`status: queued`)."""
    service: SpeechService = request.app.state.service
    settings = request.app.state.settings
    if not any(ch.isalnum() for ch in data.text):
        raise InvalidRequest("text has nothing to speak (no letters or digits)", param="text")
    voice = service.registry.resolve(None if data.voice_id.strip() == DEFAULT_VOICE_ID else data.voice_id)
    language = normalize_language(data.language)
    status = service.engines[voice.engine].status()
    if not status.ready:
        raise Unavailable(f"engine {voice.engine} not ready: {status.reason}", retry_after=5)
    hub = hub_of(request.app)
    job = hub.new_job(voice, data.voice_id, language, data.text, data.max_chars or settings.max_segment_chars,
                      rate=data.control("rate") or 1.0, volume=1.0 if data.control("volume") is None
                      else float(data.control("volume")), owner=_owner(request))  # type: ignore[arg-type]
    position = await hub.submit(job)
    return VoiceReaderSpeakResponse(job_id=job.id, status="canceled" if job.canceled else ("started" if position == 0
                         else "queued"), ws_url=_ws_url(request), voice_id=data.voice_id, queue_position=position,
                         chunks=len(job.chunks))


@post("/v1/cancel", summary="VoiceReader: cancel a speak job", status_code=200, responses=_errors(400, 401, 404),
      operation_class=OptionalBodyOperation, **_COMMON)
async def cancel(request: Request, data: VoiceReaderCancelRequest | None = None) -> VoiceReaderCancelResponse:
    """Stop a job (queued or speaking) by `job_id`; without one, the current job and every queued one
    (with API keys: the caller's key's jobs only; another key's job id is a 404). Answered once each is
    over: its `JOB_CANCELED` is on its way and its admission slot is free; it never waits for a socket."""
    hub = hub_of(request.app)
    owner = _owner(request)
    job_id = data.job_id if data is not None else None
    if job_id is not None and hub.job(job_id, owner) is None:
        raise JobNotFound(f"no job {job_id!r}", param="job_id")
    ids = await hub.cancel(job_id, owner)
    return VoiceReaderCancelResponse(canceled=bool(ids), job_ids=ids)


@post("/v1/warmup", summary="VoiceReader: warm up the engine", status_code=200, responses=_errors(400, 401, 429, 503),
      operation_class=OptionalBodyOperation, **_COMMON)
async def warmup(request: Request, data: VoiceReaderWarmupRequest | None = None) -> VoiceReaderWarmupResponse:
    """Synthesize a short sentence (skipped when already warm unless `force`); `wait: true` answers when it
    is done, with its outcome (a refusal such as RATE_LIMITED is the error it met). `/v1/health`'s
    `runtime.warmup` shows the state."""
    data = data or VoiceReaderWarmupRequest()
    hub = hub_of(request.app)
    task = hub.warmup.start(data.force)
    if data.wait and task is not None:
        await asyncio.shield(task)
        if hub.warmup.last_exception is not None:
            raise hub.warmup.last_exception
    return VoiceReaderWarmupResponse(accepted=True, warmup=hub.warmup.state())


@websocket(WS_PATH)
async def events_socket(socket: WebSocket) -> None:
    """The events of every speak job (`JOB_STARTED`, `AUDIO_CHUNK`, `JOB_DONE` / `JOB_ERROR` /
    `JOB_CANCELED`), after a `CONNECTED` hello and whatever was buffered while no socket listened; with
    API keys, the jobs of the socket's key. Client frames: `PING` (→ `PONG`), `CANCEL` (`job_id` optional).
    Every frame out goes through the socket's outbox (`jobs.Listener`): handling one never waits on a send."""
    app = socket.app
    settings = app.state.settings
    channel = WsChannel(socket, idle_timeout=settings.ws_idle_timeout, max_message_bytes=settings.ws_max_message_bytes)
    credentials = Credentials.of(socket)
    verdict = credentials.verdict(app.state.api_keys)
    await channel.accept(credentials.subprotocol)
    if verdict != "ok":
        message = "invalid token" if verdict == "denied" else (
            "missing token: send 'Authorization: Bearer <key>' or the subprotocols 'auth.bearer.v1, <key>'")
        await channel.refuse(Error(error=VoiceReaderError(code=UNAUTHORIZED, message=message)), "unauthorized")
        return
    hub = hub_of(app)
    owner = owner_of(app, credentials.token)
    current = hub.current_of(owner)
    listener = hub.attach(channel, owner, lambda replayed: Connected(
        current_job=current.id if current else None, queued=hub.queued(owner), replayed=replayed))
    try:
        while not channel.closed and not listener.dropped:
            raw = await channel.receive(busy=lambda: hub.busy)
            if raw is None:
                break
            try:
                event = channel.parse(raw, ClientEvent, CLIENT_TYPES)
            except ProtocolError as e:
                listener.offer(encode(Error(error=VoiceReaderError(code=INVALID_REQUEST, message=e.message))))
                continue
            if isinstance(event, Ping):
                listener.offer(encode(Pong()))
            elif event.job_id is not None and hub.job(event.job_id, owner) is None:
                listener.offer(encode(Error(error=VoiceReaderError(code=JOB_NOT_FOUND,
                                                                   message=f"no job {event.job_id!r}"))))
            else:
                await hub.cancel(event.job_id, owner)  # its JOB_CANCELED comes as an event
    except IdleTimeout:
        hub.detach(listener)
        await channel.close(1000, "idle")
    finally:
        hub.detach(listener)
        await channel.close()


ROUTES = [health, voices, speak, cancel, warmup, events_socket]
