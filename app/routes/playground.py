"""The web playground: `GET /` (app/static/index.html) and its assets under `/static/`.

Plain files, no build step and nothing fetched from elsewhere, so it works offline. `/` is one exact
route and the assets live under their own prefix: neither can shadow `/v1`, `/api`, `/healthz`,
`/readyz`, `/metrics`, `/demo` or `/schema`. Neither needs an API key: the page itself asks for one
and sends it with its API calls. Both stay out of the OpenAPI document (they are not the API).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import MediaType, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

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


def playground_assets() -> Router:
    """`/static/<file>` from app/static/ (scripts, styles, the speak demo)."""
    return create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False,
                                      cache_control=_NO_CACHE, name="playground-static")
