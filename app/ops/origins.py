"""Which web pages may use this gateway from a browser.

With API keys a page needs the key, so any origin may call (CORS `*`) unless `--cors-origin` narrows
it. Without keys (the default) the gateway trusts whoever reaches it, so a page the user merely
visits must not: no CORS headers, and state-changing requests and WebSockets whose `Origin` is
neither this server nor a `--cors-origin` are refused with 403. CORS alone would not do: a
multipart POST (creating a voice) is a "simple" request the browser sends without asking first.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from app.ops.errors import error_body

_SAFE = {"GET", "HEAD", "OPTIONS"}


def cors_origins(configured: tuple[str, ...], keyed: bool) -> list[str]:
    return list(configured) or (["*"] if keyed else [])


def _allowed(scope: Scope, allowed: list[str]) -> bool:
    headers = dict(scope["headers"])
    origin = headers.get(b"origin", b"").decode("latin-1")
    if not origin or "*" in allowed or origin in allowed:
        return True  # no Origin: not a browser page (curl, SDKs), or one the operator allowed
    return urlsplit(origin).netloc.lower() == headers.get(b"host", b"").decode("latin-1").lower()


def origin_guard(allowed: list[str], keyed: bool):  # noqa: ANN201 - a Litestar middleware factory
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            kind = scope["type"]
            guarded = not keyed and (kind == "websocket" or (kind == "http" and scope["method"] not in _SAFE))
            if not guarded or _allowed(scope, allowed):
                await app(scope, receive, send)
                return
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = msgspec.json.encode(error_body(
                "cross-origin requests are refused on a server without API keys; start it with --cors-origin "
                "<origin> (or --api-key)", status=403, code="cross_origin"))
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return middleware

    return factory
