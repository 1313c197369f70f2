"""Soprano-RS's wire format (msgspec): JSON client messages, JSON server events, and the binary
audio frame (4-byte big-endian header length, a JSON header, then PCM s16le).

Client messages tolerate unknown fields. A `config` sets only the fields it names (UNSET keeps the
current value), so `{"type": "config", "speed": 1.2}` changes the speed and nothing else.
"""

from __future__ import annotations

import struct
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from app.sockets.protocol import Speed, SpokenText

Name = Annotated[str, Meta(max_length=256)]
Path = Annotated[str, Meta(max_length=4096)]


# -- client → server --------------------------------------------------------------------------
class _In(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class Config(_In, tag="config"):
    voice: Name | UnsetType = UNSET  # a gateway voice name (an addition: Soprano has only voice_path)
    voice_path: Path | UnsetType = UNSET  # Soprano's voice file: its stem names the gateway voice
    speed: Speed | UnsetType = UNSET
    language_id: Annotated[str, Meta(max_length=32)] | UnsetType = UNSET
    min_chars: Annotated[int, Meta(ge=0, le=4096)] | UnsetType = UNSET
    min_words: Annotated[int, Meta(ge=0, le=1000)] | UnsetType = UNSET
    max_chars: Annotated[int, Meta(ge=16, le=4096)] | UnsetType = UNSET
    max_delay_ms: Annotated[int, Meta(ge=0, le=600_000)] | UnsetType = UNSET
    include_text: bool | UnsetType = UNSET  # Soprano's --include-text, per session here


class Text(_In, tag="text"):
    text: SpokenText


class Flush(_In, tag="flush"):
    pass


class Stop(_In, tag="stop"):
    pass


ClientMessage = Config | Text | Flush | Stop
CLIENT_TYPES = ("config", "text", "flush", "stop")


# -- server → client --------------------------------------------------------------------------
class _Out(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class Ready(_Out, tag="ready"):
    session_id: str


class Error(_Out, tag="error"):
    message: str


class Done(_Out, tag="done"):
    pass


class FrameHeader(msgspec.Struct, kw_only=True):
    chunk_id: int
    sample_rate: int
    channels: int = 1
    format: str = "pcm_s16le"
    text: str | UnsetType = UNSET  # left out of the JSON unless set


def frame(header: FrameHeader, pcm: bytes) -> bytes:
    """One binary audio message: u32 big-endian header length, the JSON header, the PCM bytes."""
    body = msgspec.json.encode(header)
    return struct.pack(">I", len(body)) + body + pcm
