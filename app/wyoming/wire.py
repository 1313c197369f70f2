"""Wyoming events off the wire, bounded and typed.

An event is a JSON header line, then `data_length` bytes of JSON merged into its `data`, then
`payload_length` bytes of payload. The library's reader (`wyoming.event.async_read_event`) reads
whatever length a client declares (one `payload_length` of 1e12 and the process buffers until it
runs out of memory) and raises on JSON that is not an object, killing the connection's task. Here
every part is bounded by `max_bytes` before it is read, and what goes wrong is one of two errors:

- `FramingError`: the stream can no longer be cut into events (a header line over the bound, a
  declared length over it or not a count, a header that is not JSON): the connection is dropped.
- `MalformedEvent`: this event is unusable (its data is not a JSON object, a field has the wrong
  type) but the next one can be read: it is answered with an `error` and the connection stays.

The event bodies the gateway acts on are decoded strictly into the structs below, so `{"text": 123}`
is a `MalformedEvent` naming the field, never a TypeError deep inside synthesis.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from wyoming.event import Event
from wyoming.version import __version__ as WYOMING_VERSION

T = TypeVar("T")


class FramingError(Exception):
    """The stream cannot be cut into events any more: answer once, then drop the connection."""


class MalformedEvent(Exception):
    """One unusable event; the connection goes on."""


class VoiceChoice(msgspec.Struct, kw_only=True):
    name: str | None = None
    language: str | None = None
    speaker: str | None = None


class SynthesizeData(msgspec.Struct, kw_only=True):
    text: str
    voice: VoiceChoice | None = None
    text_format: str | None = None  # "text" or "ssml": both are read as plain text
    context: dict[str, Any] | None = None  # Home Assistant's conversation context: not used


class SynthesizeStartData(msgspec.Struct, kw_only=True):
    voice: VoiceChoice | None = None
    text_format: str | None = None
    context: dict[str, Any] | None = None


class SynthesizeChunkData(msgspec.Struct, kw_only=True):
    text: str


def _json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise ValueError(str(e) or type(e).__name__) from None


def _length(header: dict[str, Any], key: str, max_bytes: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise FramingError(f"{key} must be a byte count, got {value!r:.40}")
    if value > max_bytes:
        raise FramingError(f"{key} {value} is over this server's limit of {max_bytes} bytes")
    return value


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event; None when the client has gone. The reader's own limit must be `max_bytes`, so an
    over-long header line fails in `readline` before it is buffered whole."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError, as readline raises it
        raise FramingError(f"event header longer than {max_bytes} bytes") from None
    if not line.endswith(b"\n"):
        return None  # end of stream (possibly mid-line)
    try:
        header = _json(line)
    except ValueError as e:
        raise FramingError(f"event header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise FramingError("event header must be a JSON object")
    data_length = _length(header, "data_length", max_bytes)
    payload_length = _length(header, "payload_length", max_bytes)
    try:
        data_bytes = await reader.readexactly(data_length) if data_length else b""
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedEvent("event 'type' must be a non-empty string")
    data = header.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MalformedEvent(f"{kind}: 'data' must be a JSON object")
    if data_bytes:
        try:
            more = _json(data_bytes)
        except ValueError as e:
            raise MalformedEvent(f"{kind}: data is not JSON: {e}") from None
        if not isinstance(more, dict):
            raise MalformedEvent(f"{kind}: data must be a JSON object")
        data = {**data, **more}
    return Event(type=kind, data=data, payload=payload)


def encode(event: Event) -> bytes:
    """The bytes of one event: header line, data, payload (what `wyoming.event.async_write_event` writes)."""
    header: dict[str, Any] = {"type": event.type, "version": WYOMING_VERSION}
    data = msgspec.json.encode(event.data) if event.data else b""
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return b"".join((msgspec.json.encode(header), b"\n", data, event.payload or b""))


def fields(event: Event, struct: type[T]) -> T:
    """`event.data` as `struct`, strictly typed; MalformedEvent naming the field otherwise."""
    try:
        return msgspec.convert(event.data, struct, strict=True)
    except msgspec.ValidationError as e:
        raise MalformedEvent(f"{event.type}: {e}") from None
