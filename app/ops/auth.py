"""Optional API keys: `Authorization: Bearer <key>` on every /v1 route, compared in constant time."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler


def key_matches(candidate: str | None, keys: tuple[str, ...]) -> bool:
    """True when `candidate` equals one of `keys`; every key is compared, so timing reveals nothing."""
    if not candidate:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard; a no-op when no keys are configured."""
    keys: tuple[str, ...] = connection.app.state.api_keys
    if not keys:
        return
    if not key_matches(bearer_token(connection.headers.get("authorization")), keys):
        raise NotAuthorizedException(
            "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
