"""Which web pages may use this gateway from a browser.

With API keys a page needs the key, so any origin may call (CORS `*`) unless `--cors-origin` narrows
it, and none of the checks below apply. Without keys (the default) the gateway trusts whoever reaches
it, so a page the user merely visits must not:

- Host names (DNS rebinding): a page on `rebind.example` whose name is re-pointed at this server is
  same-origin with itself, so its `Origin` matches its `Host` and the origin check below passes it.
  A browser request whose `Host` is a name other than `localhost` / `*.localhost`, the address the
  server is bound to or an `--allowed-host` is refused with 421 (a WebSocket with close 1008) before
  any origin is compared, unless its `Origin` is a `--cors-origin` (a page the operator named is no
  rebinding page, whatever name a reverse proxy gives the server). IP literals (v4 and [v6]) pass: a page cannot rebind those. Safe GETs are
  covered too: a rebinding page can read every answer (voice lists, a cloned voice's sample, /metrics).
  Only browser requests are checked (an `Origin` or a `Sec-Fetch-*` header, sent by current browsers on
  every request they make): a non-browser client can send any Host it likes anyway, and one that
  reaches a keyless server by a service name (`http://gateway:8000` in a compose file) must keep working.
- Origins: no CORS headers, and state-changing requests and WebSockets whose `Origin` is neither this
  server nor a `--cors-origin` are refused with 403 (a WebSocket with close 1008). CORS alone would
  not do: a multipart POST (creating a voice) is a "simple" request the browser sends without asking.

A refused WebSocket is accepted and then closed, so the page reads the close code and reason (a
refused handshake shows a browser nothing). Each refusal is logged at WARNING once per origin or host
per minute, naming the flag that would allow it.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from app.ops.errors import error_body
from app.sockets.session import AUTH_SUBPROTOCOL, POLICY_VIOLATION

log = logging.getLogger("app.origins")

_SAFE = {"GET", "HEAD", "OPTIONS"}
MAX_REASON_BYTES = 123  # a WebSocket close reason's limit (RFC 6455)


def cors_origins(configured: tuple[str, ...], keyed: bool) -> list[str]:
    return list(configured) or (["*"] if keyed else [])


class OncePerMinute:
    """Whether to log a refusal: once per key (an origin, a host) per `interval`; the keys remembered are
    bounded, so a client inventing origins costs a fixed amount of memory."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()

    def __call__(self, key: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


def host_name(host: str) -> str:
    """The name in a Host header, without the port or the brackets of an IPv6 literal, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def local_host(name: str, allowed: frozenset[str]) -> bool:
    """True for a Host a rebinding page cannot have: an IP literal, localhost, or a name the operator named."""
    name = name.rstrip(".")
    if not name or name == "localhost" or name.endswith(".localhost") or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:  # "http://[x": a crafted Origin is a refusal, not an error
        return None


def _shown(value: str) -> str:
    """A client's header as a log line or an error message may show it: bounded, printable characters only."""
    return "".join(ch if ch.isprintable() else "?" for ch in value[:200])


def origin_guard(allowed: list[str], keyed: bool, hosts: tuple[str, ...] = ()):  # noqa: ANN201 - a middleware factory
    """`allowed`: the CORS origins; `hosts`: the names a browser may call this server by besides localhost and
    IP literals (the bound address, `--allowed-host`)."""
    names = frozenset(host_name(h) for h in hosts if h)
    should_log = OncePerMinute()

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            kind = scope["type"]
            if keyed or kind not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            browser = bool(origin) or b"sec-fetch-site" in headers or b"sec-fetch-mode" in headers
            chosen = bool(origin) and ("*" in allowed or origin in allowed)  # a page the operator named
            name = host_name(host)
            if browser and not chosen and not local_host(name, names):
                shown = _shown(name)
                if should_log("host " + name):
                    log.warning("refused a browser request for the unknown host name '%s' (DNS rebinding?); if it is "
                                "this server's name, start the server with --allowed-host %s (or --api-key)", shown,
                                shown)
                await _refuse(scope, receive, send, 421, "unknown_host",
                              f"this server has no API keys and does not answer browsers that call it by the name "
                              f"'{shown}'; start it with --allowed-host {shown} (or --api-key)",
                              f"unknown host name: start the server with --allowed-host {shown}")
                return
            guarded = kind == "websocket" or scope["method"] not in _SAFE
            if not guarded or not origin or "*" in allowed or origin in allowed \
                    or _netloc(origin) == host.lower():
                await app(scope, receive, send)  # no Origin: not a browser page (curl, SDKs); or an allowed one
                return
            shown = _shown(origin)
            if should_log("origin " + origin):
                log.warning("refused a cross-origin request from '%s' on a server without API keys; allow that "
                            "page with --cors-origin %s (or use --api-key)", shown, shown)
            await _refuse(scope, receive, send, 403, "cross_origin",
                          f"cross-origin requests from '{shown}' are refused on a server without API keys; "
                          f"start it with --cors-origin {shown} (or --api-key)",
                          f"origin not allowed: start the server with --cors-origin {shown}")

        return middleware

    return factory


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str,
                  reason: str) -> None:
    """An OpenAI error body with `status`; a WebSocket is accepted, then closed with 1008 and `reason`."""
    if scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            return
        offered = [p.strip() for p in scope.get("subprotocols") or []]
        # A browser that offered subprotocols fails a handshake that picks none, hiding the close reason.
        subprotocol = AUTH_SUBPROTOCOL if AUTH_SUBPROTOCOL in offered else (offered[0] if offered else None)
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})
        await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                    "reason": reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")})
        return
    kind = "invalid_request_error" if status == 421 else None  # 403: the usual permission_error
    body = msgspec.json.encode(error_body(message, status=status, type_=kind, code=code))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
