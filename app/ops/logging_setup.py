"""Logging: plain text for people, or one JSON object per line for log collectors (`--log-format json`).

Either way the per-request line (`app.requests`) carries a JSON object, so it can be grepped and
parsed from a text log too: in text mode it is the message after the usual prefix, in JSON mode its
fields sit at the top level of the line beside `ts`, `level` and `logger`.
"""

from __future__ import annotations

import copy
import logging
import re
import sys
import time
from typing import Any

import msgspec

LOG_FORMATS = ("text", "json")
# Credentials a client may put in a URL (`?token=` is the documented WebSocket form): uvicorn logs the
# full path with its query string on every access and WebSocket handshake line.
_URL_SECRET = re.compile(r"([?&](?:token|api[_-]?key|key|access_token|auth(?:_?token)?)=)[^&\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _URL_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class RedactCredentials(logging.Filter):
    """Rewrites a record's message and string arguments so no URL credential reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) and "=" in a else a for a in record.args)
        return True


def uvicorn_log_config(log_format: str) -> dict | None:
    """uvicorn's text logging config with the redaction filter on its handlers; None (our root handler,
    which has the filter too) for JSON logs."""
    if log_format == "json":
        return None
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": RedactCredentials}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
_FIELDS = "fields"  # LogRecord attribute that carries an event's structured fields


def log_event(logger: logging.Logger, level: int, fields: dict[str, Any]) -> None:
    """Log one structured event; the message is the fields as compact JSON."""
    if logger.isEnabledFor(level):
        logger.log(level, msgspec.json.encode(fields).decode(), extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", ...}`: an event's fields, or `message` (and `exc`) for plain records."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line, enc_hook=str).decode()


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """One handler on the root logger, on standard error, unless the root logger already has one.

    Like `logging.basicConfig`, an existing set-up wins: in the server nothing configures logging
    before us (Litestar's own logging config is turned off in `create_app`), while a host process
    such as pytest keeps its capture handlers when it builds an app.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactCredentials())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
