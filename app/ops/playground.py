"""The web playground: `GET /` (app/static/index.html) and its assets under `/static/`.

Plain files, no build step and nothing fetched from elsewhere, so it works offline. `/` is one exact
route and the assets live under their own prefix: neither can shadow `/v1`, `/api`, `/healthz`,
`/readyz`, `/metrics`, `/demo` or `/schema`. Neither needs an API key: the page itself asks for one
and sends it with its API calls. Both stay out of the OpenAPI document (they are not the API).
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX = STATIC_DIR / "index.html"
# Revalidate every time: after an upgrade a stale script must never talk to a newer API.
_NO_CACHE = CacheControlHeader(no_cache=True)


@cache
def _index_html() -> bytes:
    return INDEX.read_bytes()


@get("/", include_in_schema=False, cache_control=_NO_CACHE)
async def playground_page() -> Response:
    """Speak, stream and manage voices from a browser."""
    return Response(_index_html(), media_type=MediaType.HTML)


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Every file of app/static/ by name, read once. A fixed set looked up by exact name: no path from the
    URL ever reaches the filesystem, so `..`, `.`, NUL or control characters can only miss (404)."""
    assets = {}
    for path in STATIC_DIR.iterdir():
        if path.is_file():
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if media_type.startswith("text/") or media_type.endswith("javascript"):
                media_type += "; charset=utf-8"
            assets[path.name] = (path.read_bytes(), media_type)
    return assets


@get("/static/{name:str}", include_in_schema=False, cache_control=_NO_CACHE, name="playground-static")
async def playground_asset(name: str) -> Response:
    """`/static/<file>` from app/static/ (scripts, styles, the speak demo)."""
    asset = _assets().get(name)
    if asset is None:
        raise NotFoundException("no such file under /static")
    return Response(asset[0], media_type=asset[1])


def playground_assets() -> object:
    return playground_asset
