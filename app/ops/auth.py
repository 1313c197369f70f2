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


PUBLIC_LISTING = "public_listing"
"""A route's `opt` key: the route is a listing that `--public-listings` opens to callers without a key."""


def require_api_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Litestar guard; a no-op when no keys are configured.

    With `--public-listings`, the routes marked `opt={PUBLIC_LISTING: True}` (the voice and model
    lists) answer without a key: Open WebUI reads them with no Authorization header, and would
    otherwise show only its six built-in voice names. They reveal names, never audio or samples.
    """
    keys: tuple[str, ...] = connection.app.state.api_keys
    if not keys:
        return
    if handler.opt.get(PUBLIC_LISTING) and connection.app.state.settings.public_listings:
        return
    if not key_matches(bearer_token(connection.headers.get("authorization")), keys):
        raise NotAuthorizedException(
            "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
