"""Other speech servers' APIs, spoken by this gateway so their clients switch without a rewrite.

Each adapter is a package of the edge (`app/<protocol>/`) exposing `ROUTES`, Litestar handlers
(HTTP and WebSocket) that translate its wire format to SpeechService calls: no second synthesis
path, and the same auth, admission, limits and metrics as the gateway's own routes.
"""

from __future__ import annotations

from typing import Any

from litestar import Router

from app.chatterbox.routes import ROUTES as CHATTERBOX_ROUTES
from app.settings import Settings
from app.soprano.routes import ROUTES as SOPRANO_ROUTES
from app.voicereader.routes import ROUTES as VOICEREADER_ROUTES

# name → the adapter's route handlers
ADAPTERS: dict[str, list[Any]] = {
    "chatterbox": CHATTERBOX_ROUTES,
    "soprano": SOPRANO_ROUTES,
    "voicereader": VOICEREADER_ROUTES,
}


def enabled_protocols(settings: Settings) -> tuple[str, ...]:
    """The adapters `settings.protocols` asks for ("all", "none", or names); SystemExit on an unknown name."""
    asked = tuple(name.strip().lower() for name in settings.protocols if name.strip())
    if "none" in asked:
        return ()
    if "all" in asked or not asked:
        return tuple(ADAPTERS)
    unknown = [name for name in asked if name not in ADAPTERS]
    if unknown:
        raise SystemExit(f"--protocol {unknown[0]!r}: expected one of {', '.join([*ADAPTERS, 'all', 'none'])}")
    return tuple(dict.fromkeys(asked))


def protocol_routes(settings: Settings) -> list[Router]:
    """One router per enabled adapter; `/metrics` counts everything it serves under the protocol's name."""
    return [Router("/", route_handlers=ADAPTERS[name], opt={"metrics_route": name})
            for name in enabled_protocols(settings)]
