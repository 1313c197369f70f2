"""One mapper from every failure to OpenAI's error body: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from engine.errors import InvalidRequest, SpeechError

log = logging.getLogger("app.ops.errors")

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, *, status: int, type_: str | None = None, param: str | None = None,
               code: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": type_ or _OPENAI_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(status: int, body: dict, retry_after: float | None = None) -> Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
        headers["x-should-retry"] = "true"
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


def speech_error_body(exc: SpeechError) -> dict:
    return error_body(exc.message, status=exc.status, type_=exc.type, param=exc.param, code=exc.code)


def validation_param(exc: ValidationException) -> tuple[str, str | None]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    if not extra:
        return exc.detail, None
    first = extra[0] if isinstance(extra[0], dict) else {}
    message = str(first.get("message", exc.detail))
    key = first.get("key")
    if key in (None, "data"):
        named = re.search(r"`([A-Za-z_][\w]*)`", message)
        key = named.group(1) if named else None
    text = f"Invalid value for '{key}': {message}" if key else message
    return text, key


def invalid_field(e: msgspec.ValidationError) -> InvalidRequest:
    """A form converted with msgspec: its message ("Expected `str` of length <= 64 - at `$.name`") as a 400
    with `param` set to the field."""
    field = re.search(r"at `\$\.(\w+)", str(e))  # also `$.timestamp_granularities[0]`
    missing = re.search(r"missing required field `(\w+)`", str(e))
    param = field.group(1) if field else missing.group(1) if missing else None
    return InvalidRequest(f"invalid value for {param!r}: {e}" if param else f"invalid request: {e}", param=param)


def handle_exception(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SpeechError):
        if exc.status >= 500:
            log.warning("request failed: %s", exc.message)
        return error_response(exc.status, speech_error_body(exc), exc.retry_after)
    if isinstance(exc, ValidationException):
        message, param = validation_param(exc)
        return error_response(400, error_body(message, status=400, param=param, code="invalid_value"))
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 408: "timeout"}.get(status)
        retry = None
        if exc.headers and "Retry-After" in exc.headers:
            retry = float(exc.headers["Retry-After"])
        return error_response(status, error_body(exc.detail, status=status, code=code), retry)
    if isinstance(exc, RecursionError):
        # msgspec refuses JSON nested deeper than it can recurse: the body is at fault, not the server.
        return error_response(400, error_body("the JSON body is nested too deeply", status=400, code="invalid_json"))
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, error_body("internal server error", status=500, code="internal_error"))
