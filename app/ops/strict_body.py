"""JSON request bodies held to their documented types.

Litestar converts a handler's `data` leniently (`"stream": 0` passes as a boolean, `"1.5"` as a
number), which the OpenAPI document does not allow and clients should learn about rather than have
guessed. This hook, run before every HTTP handler, decodes a JSON body strictly against the
handler's `data` type and turns a mismatch into the ValidationException Litestar would raise, so
every family answers it in its own error shape. Malformed JSON is left to Litestar's own message.
"""

from __future__ import annotations

import re

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

_PATH = re.compile(r"at `\$\.([\w.\[\]]+)`")
_MISSING = re.compile(r"missing required field `(\w+)`")


async def strict_json_body(request: Request) -> None:
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None or not request.headers.get("content-type", "application/json").startswith("application/json"):
        return
    body = await request.body()  # cached on the request: the handler's own parsing reads it again
    if not body.strip():
        return
    try:
        msgspec.json.decode(body, type=data.annotation)
    except msgspec.ValidationError as e:
        found = _PATH.search(str(e)) or _MISSING.search(str(e))
        key = found.group(1).split(".")[-1] if found else None
        raise ValidationException(detail=f"Validation failed for {request.method} {request.url.path}",
                                  extra=[{"message": str(e), "key": key, "source": "body"}]) from None
    except (msgspec.DecodeError, TypeError):
        return  # malformed JSON (Litestar says so), or a type msgspec cannot decode into
