"""create_app: settings → engines → speech service → Litestar app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig

from app.batch.routes import create_speech_batch
from app.ops.auth import require_api_key
from app.ops.errors import handle_exception
from app.ops.logging_setup import configure_logging
from app.ops.metrics import GatewayMetrics, metrics_endpoint
from app.ops.openapi import docs_ui
from app.ops.origins import cors_origins, origin_guard
from app.ops.playground import playground_assets, playground_page
from app.ops.request_id import request_id_middleware
from app.ops.routes import healthz, list_audio_models, list_models, readyz, retrieve_model
from app.ops.strict_body import strict_json_body
from app.settings import Settings, load_settings
from app.sockets.routes import speak_demo, speak_socket, speech_stream_socket
from app.speech.routes import create_speech
from app.transcription.routes import TRANSCRIPTION_ROUTES
from app.voices.routes import VOICE_ROUTES
from app.wiring.asr import build_transcriber
from app.wiring.engines import build_engines
from app.wiring.protocols import protocol_routes
from app.wyoming.server import WyomingServer
from engine.consent_store import consent_store
from engine.service import SpeechService
from engine.voice_store import CONSENTS_DIR

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics = GatewayMetrics()
    voice_map = settings.voice_mapping()  # a malformed entry stops the start here, not at the first request
    adapters = protocol_routes(settings)  # likewise an unknown --protocol
    wyoming = WyomingServer(settings) if settings.wyoming_port is not None else None  # and a wrong Wyoming flag

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        service = SpeechService(
            build_engines(settings),
            max_concurrent=settings.max_concurrent,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
            request_timeout=settings.request_timeout,
            observer=metrics,
            voice_map=voice_map,
            transcriber=build_transcriber(settings, observer=metrics),
        )
        metrics.bind(service)
        await service.start()
        if service.transcriber is not None:
            await service.transcriber.start(preload=settings.preload)
        app.state.service = service
        log.info("engines: %s", ", ".join(f"{s.name} ready={s.ready} {s.reason}" for s in service.status()))
        try:
            if wyoming is not None:
                await wyoming.start(service)
            yield
        finally:
            if wyoming is not None:
                await wyoming.stop()
            metrics.bind(None)
            await service.close()

    v1 = Router("/", route_handlers=[create_speech, create_speech_batch, list_models, retrieve_model,
                                     list_audio_models, *VOICE_ROUTES, *TRANSCRIPTION_ROUTES],
                guards=[require_api_key])
    docs_plugin, docs_assets = docs_ui()
    keyed = bool(settings.all_api_keys())
    origins = cors_origins(settings.cors_origins, keyed)
    app = Litestar(
        route_handlers=[v1, healthz, readyz, metrics_endpoint, speak_socket, speech_stream_socket, speak_demo,
                        playground_page, playground_assets(), docs_assets, *adapters],
        lifespan=[lifespan],
        before_request=strict_json_body,
        exception_handlers={Exception: handle_exception},
        middleware=[request_id_middleware, metrics.middleware,
                    origin_guard(origins, keyed, (settings.host, *settings.allowed_hosts))],
        cors_config=CORSConfig(allow_origins=origins, expose_headers=["x-request-id", "retry-after"]) if origins
        else None,
        openapi_config=OpenAPIConfig(title="Qwen Speech Gateway", version="0.1.0", render_plugins=[docs_plugin]),
        debug=False,
        logging_config=None,  # configure_logging owns the root logger; Litestar's default would replace it
    )
    app.state.settings = settings
    consent_store(Path(settings.voices_dir) / CONSENTS_DIR)  # cleans what a crash left, before this process writes
    app.state.metrics = metrics
    app.state.api_keys = settings.all_api_keys()
    return app
