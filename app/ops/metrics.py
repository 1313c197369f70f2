"""Prometheus metrics and the per-request log line, kept out of route logic.

Three sources feed one registry per app (never prometheus-client's global one, so tests can build
several apps in one process):
- `SpeechService` calls `GatewayMetrics` as its observer for every synthesis, whatever the transport:
  time to first audio, synthesis time, real-time factor, audio produced, outcomes, one JSON log line.
- An ASGI middleware puts the matched route in a context variable (the observer labels by it) and
  counts HTTP requests that never reached the service (validation, auth, listings, /metrics itself).
- A collector reads gauges at scrape time: admission queues (depth, active slots, 429 rejections),
  engine readiness and each engine's optional `metrics_snapshot()` (see `engine.base.Engine`).

WebSocket sessions are counted by the same middleware (from `websocket.accept` to the end of the
connection), so WebSocket routes need no metrics code; each utterance they open through the service
is counted like an HTTP request, labelled with the WebSocket route. `ws_session_opened(route)` /
`ws_session_closed(route)` (or `with metrics.ws_session(route)`) are there for sessions that live
outside a WebSocket route.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from litestar import Request, Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from app.ops.logging_setup import log_event
from engine import limits
from engine.errors import Overloaded, SpeechError, Unavailable
from engine.service import SpeechParams, SpeechService, SpeechStream

PREFIX = "speech_gateway"
# First audio on a warm GPU is ~50-250 ms; a long text on a busy CPU can take a minute.
LATENCY_BUCKETS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
SPEECH_ROUTE_PREFIX = "/v1/audio/speech"  # POSTs under it are speech requests and get a log line

request_log = logging.getLogger("app.requests")
_CONTEXT: contextvars.ContextVar[_RequestContext | None] = contextvars.ContextVar("speech_gateway_request",
                                                                                  default=None)


@dataclass
class _RequestContext:
    route: str
    method: str
    request_id: str
    status: int = 500  # until a response starts: an exception that escaped every handler
    reached_service: bool = False


@dataclass(frozen=True)
class _Origin:
    """What the observer remembers about an open stream (it may finish outside the request's context)."""

    route: str
    request_id: str


def _metric_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key).strip("_").lower()


class GatewayMetrics:
    """The app's metrics: a `SpeechObserver`, an ASGI middleware factory and a Prometheus collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service: SpeechService | None = None
        self._origins: WeakKeyDictionary[SpeechStream, _Origin] = WeakKeyDictionary()
        r = self.registry
        self.ttfa = Histogram(f"{PREFIX}_time_to_first_audio_seconds", "Request received to first audio chunk "
                              "(admission wait included)", ["engine", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.synthesis = Histogram(f"{PREFIX}_synthesis_seconds", "Request received to last audio chunk, completed "
                                   "syntheses only", ["engine", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram(f"{PREFIX}_real_time_factor", "Synthesis seconds per second of audio, completed "
                             "syntheses only (below 1 is faster than real time)", ["engine"], buckets=RTF_BUCKETS,
                             registry=r)
        self.audio = Counter(f"{PREFIX}_audio_seconds", "Seconds of audio produced", ["engine"], registry=r)
        self.requests = Counter(f"{PREFIX}_requests", "Requests by route, status, audio format and voice kind; "
                                "each batch item and WebSocket utterance counts once, with the status HTTP "
                                "would have sent",
                                ["route", "status", "format", "voice_kind"], registry=r)
        self.outcomes = Counter(f"{PREFIX}_speech_outcomes", "Speech requests by outcome: ok, cancelled (client "
                                "gone before the end), error, rejected", ["engine", "route", "outcome"], registry=r)
        self.cancellations = Counter(f"{PREFIX}_cancellations", "Syntheses abandoned by their client before the end",
                                     ["engine", "route"], registry=r)
        self.errors = Counter(f"{PREFIX}_synthesis_errors", "Syntheses that failed after admission, by error code",
                              ["engine", "code"], registry=r)
        self.transcriptions = Counter(f"{PREFIX}_transcriptions", "Transcriptions and translations by task and "
                                      "outcome: ok, rejected (busy, bad argument, no model), error, cancelled",
                                      ["task", "outcome"], registry=r)
        self.transcribed_audio = Counter(f"{PREFIX}_transcribed_audio_seconds", "Seconds of audio heard by the "
                                         "speech recognizer (completed transcriptions)", ["task"], registry=r)
        self.recognizer_latency = Histogram(f"{PREFIX}_recognizer_seconds", "Request admitted or queued to the last "
                                            "segment recognized, completed transcriptions only", ["task"],
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.ws_active = Gauge(f"{PREFIX}_websocket_sessions", "Open WebSocket sessions", ["route"], registry=r)
        self.ws_total = Counter(f"{PREFIX}_websocket_sessions_opened", "WebSocket sessions opened", ["route"],
                                registry=r)
        r.register(_ScrapeTimeCollector(self))

    def bind(self, service: SpeechService | None) -> None:
        """Point the scrape-time gauges at the running service (None again at shutdown)."""
        self.service = service

    # -- WebSocket sessions (for the WebSocket routes to call) -------------------------------
    def ws_session_opened(self, route: str) -> None:
        self.ws_active.labels(route).inc()
        self.ws_total.labels(route).inc()

    def ws_session_closed(self, route: str) -> None:
        self.ws_active.labels(route).dec()

    @contextmanager
    def ws_session(self, route: str) -> Iterator[None]:
        self.ws_session_opened(route)
        try:
            yield
        finally:
            self.ws_session_closed(route)

    # -- other transports (Wyoming) -------------------------------------------------------------
    @staticmethod
    def label_route(route: str, request_id: str = "") -> None:
        """Label what the current task (and tasks it starts) asks of the service with `route`: Wyoming's
        connections, and VoiceReader's job tasks. Inside an HTTP request or WebSocket the middleware's
        context is relabelled instead, so its own count of the request uses the same label (routes
        name their label with `opt={"metrics_route": ...}`, see app/wiring/protocols.py)."""
        ctx = _CONTEXT.get()
        if ctx is not None and ctx.method != "TCP":
            ctx.route = route
            return
        _CONTEXT.set(_RequestContext(route, "TCP", request_id))

    # -- SpeechObserver ------------------------------------------------------------------------
    def refused(self, params: SpeechParams, error: BaseException, requested_at: float) -> None:
        ctx = _CONTEXT.get()
        if ctx is not None:
            ctx.reached_service = True
        route = ctx.route if ctx else "internal"
        if isinstance(error, SpeechError):
            status = error.status
            # Refused before synthesis (bad voice, busy, not loaded): the client may fix it or retry.
            outcome = "rejected" if status < 500 or isinstance(error, (Overloaded, Unavailable)) else "error"
        elif isinstance(error, asyncio.CancelledError):
            status, outcome = 499, "cancelled"  # nginx's "client closed request": gone while queued
        else:
            status, outcome = 500, "error"
        fmt = params.labels.get("format", "")
        self.requests.labels(route, str(status), fmt, "").inc()
        self.outcomes.labels(params.engine or "", route, outcome).inc()
        log_event(request_log, logging.INFO if outcome == "rejected" else logging.WARNING, {
            "event": "speech_request", "id": params.request_id or (ctx.request_id if ctx else ""), "route": route,
            "voice": params.voice, "format": fmt, "outcome": outcome, "status": status,
            "error": getattr(error, "code", type(error).__name__), "message": str(error)[:300],
            "ttfa_ms": None, "duration_ms": round((time.monotonic() - requested_at) * 1000, 1), "audio_s": 0.0,
        })

    def opened(self, stream: SpeechStream) -> None:
        ctx = _CONTEXT.get()
        if ctx is not None:
            ctx.reached_service = True
        self._origins[stream] = _Origin(ctx.route if ctx else "internal", ctx.request_id if ctx else "")

    def finished(self, stream: SpeechStream) -> None:
        origin = self._origins.pop(stream, None) or _Origin("internal", "")
        engine, route, outcome = stream.voice.engine, origin.route, stream.outcome
        fmt = stream.params.labels.get("format", "") if stream.params else ""
        ttfa = stream.first_audio_at - stream.requested_at if stream.first_audio_at is not None else None
        duration = (stream.ended_at or stream.requested_at) - stream.requested_at
        if ttfa is not None:
            self.ttfa.labels(engine, route).observe(ttfa)
        self.audio.labels(engine).inc(stream.audio_seconds)
        self.requests.labels(route, "200", fmt, stream.voice.kind).inc()
        self.outcomes.labels(engine, route, outcome).inc()
        code = None
        if outcome == "ok":
            self.synthesis.labels(engine, route).observe(duration)
            if stream.audio_seconds > 0:
                self.rtf.labels(engine).observe(duration / stream.audio_seconds)
        elif outcome == "cancelled":
            self.cancellations.labels(engine, route).inc()
        else:
            code = getattr(stream.error, "code", "internal_error")
            self.errors.labels(engine, code).inc()
        fields = {
            "event": "speech_request", "id": stream.request.request_id or origin.request_id, "route": route,
            "voice": stream.voice.id, "voice_kind": stream.voice.kind, "engine": engine, "format": fmt,
            "outcome": outcome, "status": 200,
            "ttfa_ms": round(ttfa * 1000, 1) if ttfa is not None else None,
            "duration_ms": round(duration * 1000, 1), "audio_s": round(stream.audio_seconds, 3),
        }
        if code is not None:
            fields["error"] = code
            fields["message"] = str(stream.error)[:300]
        log_event(request_log, logging.WARNING if code else logging.INFO, fields)

    # -- TranscriptionObserver (engine.asr) ----------------------------------------------------------
    def transcribed(self, *, task: str, audio_seconds: float, seconds: float, outcome: str,
                    error: BaseException | None) -> None:
        self.transcriptions.labels(task, outcome).inc()
        if outcome == "ok":
            self.transcribed_audio.labels(task).inc(audio_seconds)
            self.recognizer_latency.labels(task).observe(seconds)
        ctx = _CONTEXT.get()
        fields = {"event": "transcription", "id": ctx.request_id if ctx else "", "route": ctx.route if ctx else "",
                  "task": task, "outcome": outcome, "audio_s": round(audio_seconds, 3),
                  "duration_ms": round(seconds * 1000, 1)}
        if error is not None:
            fields["error"] = getattr(error, "code", type(error).__name__)
            fields["message"] = str(error)[:300]
        log_event(request_log, logging.WARNING if outcome == "error" else logging.INFO, fields)

    # -- ASGI middleware -------------------------------------------------------------------------
    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware factory: route context for the observer, counts for the rest."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            # The route template, not the raw path, so label cardinality stays bounded; a handler may
            # name its own label (each drop-in protocol's router: `opt={"metrics_route": "soprano"}`).
            handler = scope.get("route_handler")
            route = ((handler.opt.get("metrics_route") if handler is not None else None)
                     or scope.get("path_template") or scope.get("path", ""))
            ctx = _RequestContext(route, scope.get("method", "WS"), scope.get("state", {}).get("request_id", ""))
            token = _CONTEXT.set(ctx)

            accepted = False

            async def watch(message: Message) -> None:
                nonlocal accepted
                if message["type"] == "http.response.start":
                    ctx.status = message["status"]
                elif message["type"] == "websocket.accept" and not accepted:
                    accepted = True
                    self.ws_session_opened(route)
                await send(message)

            try:
                await app(scope, receive, watch)
            finally:
                _CONTEXT.reset(token)
                if accepted:
                    self.ws_session_closed(route)
                if scope["type"] == "http" and not ctx.reached_service:
                    self._count_plain_request(ctx)

        return middleware

    def _count_plain_request(self, ctx: _RequestContext) -> None:
        self.requests.labels(ctx.route, str(ctx.status), "", "").inc()
        if ctx.method == "POST" and ctx.route.startswith(SPEECH_ROUTE_PREFIX) and ctx.status >= 400:
            # Refused before the service saw it (validation, auth, unknown model): still one line per request.
            self.outcomes.labels("", ctx.route, "rejected").inc()
            log_event(request_log, logging.INFO, {
                "event": "speech_request", "id": ctx.request_id, "route": ctx.route, "voice": None, "format": None,
                "outcome": "rejected", "status": ctx.status, "ttfa_ms": None, "duration_ms": None, "audio_s": 0.0,
            })


class _ScrapeTimeCollector(Collector):
    """Numbers that live in the service and the engines, read when Prometheus scrapes."""

    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unknown until a service is bound; an empty describe lets the registry accept us

    def collect(self) -> Iterator[Metric]:
        service = self._metrics.service
        if service is None:
            return
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Requests waiting for an admission slot", labels=["engine"])
        active = GaugeMetricFamily(f"{PREFIX}_active_slots", "Syntheses holding an admission slot", labels=["engine"])
        limit = GaugeMetricFamily(f"{PREFIX}_max_slots", "Admission slots per engine", labels=["engine"])
        rejected = CounterMetricFamily(f"{PREFIX}_rejections", "Requests refused with 429 by admission control",
                                       labels=["engine"])
        ready = GaugeMetricFamily(f"{PREFIX}_engine_ready", "1 when the engine can synthesize", labels=["engine"])
        for name, queue in service.admission.items():
            depth.add_metric([name], queue.queued)
            active.add_metric([name], queue.active)
            limit.add_metric([name], queue.max_active)
            rejected.add_metric([name], queue.rejected)
        for name, engine in service.engines.items():
            ready.add_metric([name], 1.0 if engine.status().ready else 0.0)
        if service.transcriber is not None:  # the recognizer's own admission queue, as the engine "asr"
            queue = service.transcriber.admission
            depth.add_metric(["asr"], queue.queued)
            active.add_metric(["asr"], queue.active)
            limit.add_metric(["asr"], queue.max_active)
            rejected.add_metric(["asr"], queue.rejected)
        hits = CounterMetricFamily(f"{PREFIX}_limit_hits", "Protective limits that fired: decoded_audio, "
                                   "send_timeout, header_timeout, body_timeout, max_connections, max_voices, "
                                   "slow_listener, wyoming_not_allowed, wyoming_max_connections, wyoming_idle, "
                                   "wyoming_bad_framing, wyoming_malformed_event, wyoming_text_queue, "
                                   "wyoming_send_timeout", labels=["limit"])
        for name, count in sorted(limits.HITS.items()):
            hits.add_metric([name], count)
        yield from (depth, active, limit, rejected, ready, hits)
        yield from _engine_families(service)


_DEDICATED = {
    "model_load_seconds": (GaugeMetricFamily, f"{PREFIX}_model_load_seconds", "Seconds the last model load took"),
    "prompt_cache_hits_total": (CounterMetricFamily, f"{PREFIX}_prompt_cache_hits",
                                "Voice-clone prompts served from the cache (memory or disk)"),
    "prompt_cache_misses_total": (CounterMetricFamily, f"{PREFIX}_prompt_cache_misses",
                                  "Voice-clone prompts computed from reference audio"),
}


def engine_numbers(engine: object) -> dict[str, float]:
    """An engine's `metrics_snapshot()`, or what its prompt cache's `stats` tell when it has none."""
    snapshot = getattr(engine, "metrics_snapshot", None)
    if callable(snapshot):
        return {str(k): float(v) for k, v in snapshot().items()}
    cache = getattr(engine, "prompt_cache", None) or getattr(engine, "prompts", None)
    stats = getattr(cache, "stats", None)
    if stats is None:
        return {}
    return {"prompt_cache_hits_total": float(getattr(stats, "memory_hits", 0) + getattr(stats, "disk_hits", 0)),
            "prompt_cache_misses_total": float(getattr(stats, "computed", 0))}


def _engine_families(service: SpeechService) -> Iterator[Metric]:
    families: dict[str, Metric] = {}  # by key; histograms under "histogram:<key>"
    for name, engine in service.engines.items():
        try:
            numbers = engine_numbers(engine)
        except Exception:  # noqa: BLE001 - a broken engine hook must not break the scrape
            logging.getLogger(__name__).exception("metrics_snapshot of engine %s failed", name)
            continue
        for key, value in numbers.items():
            key = _metric_name(key)
            if key not in families:
                kind, metric, help_text = _DEDICATED.get(key) or (
                    (CounterMetricFamily if key.endswith("_total") else GaugeMetricFamily),
                    f"{PREFIX}_engine_{key}", f"Engine-reported {key.replace('_', ' ')}")
                families[key] = kind(metric, help_text, labels=["engine"])
            families[key].add_metric([name], value)
        histograms = getattr(engine, "metrics_histograms", None)
        for key, (edges, counts, total) in (histograms() if callable(histograms) else {}).items():
            family = families.setdefault(f"histogram:{key}", HistogramMetricFamily(
                f"{PREFIX}_engine_{key}", f"Engine-reported {key.replace('_', ' ')}", labels=["engine"]))
            cumulative = list(itertools.accumulate(counts))
            buckets = [(str(float(e)), c) for e, c in zip(edges, cumulative, strict=True)]
            family.add_metric([name], buckets + [("+Inf", cumulative[-1] if cumulative else 0)], float(total))
    yield from families.values()


@get("/metrics", summary="Prometheus metrics", media_type=CONTENT_TYPE_PLAIN_0_0_4, sync_to_thread=False)
def metrics_endpoint(request: Request) -> Response[bytes]:
    """Prometheus text format (OpenMetrics when the scraper asks for it); no API key: scrapers rarely send one."""
    metrics: GatewayMetrics = request.app.state.metrics
    encoder, content_type = choose_encoder(request.headers.get("accept"))
    return Response(encoder(metrics.registry), media_type=content_type)
