"""Where `speech-gateway say` gets its audio: the engines in this process, or a running gateway.

Both give one segment of text as float32 chunks at 24 kHz, never encoded, so the caller can put a
whole book through ONE tempo stretcher and ONE encoder: no seams, no repeated headers, whichever
source made the audio.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.settings import Settings

SAMPLE_RATE = 24000


class SayError(Exception):
    """A failure the user can act on; printed without a traceback."""


@dataclass(frozen=True)
class Voicing:
    """Everything besides the text that changes the audio of a segment."""

    voice: str | None = None
    language: str | None = None
    instructions: str | None = None

    def key(self, text: str, *extra: object) -> str:
        """A fingerprint of `text` spoken this way: a resumed run redoes a segment whose key changed."""
        parts = [self.voice or "", self.language or "", self.instructions or "", text, *map(str, extra)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


class Synth(Protocol):
    def segment(self, text: str) -> AsyncIterator[np.ndarray]: ...


class LocalSynth:
    """The engines loaded in this process, through the same SpeechService the server uses."""

    def __init__(self, settings: Settings, voicing: Voicing):
        self.settings = settings
        self.voicing = voicing

    async def __aenter__(self) -> LocalSynth:
        from app.wiring.engines import build_engines
        from engine.languages import normalize_language
        from engine.service import SpeechService

        self.language = normalize_language(self.voicing.language)
        self.service = SpeechService(build_engines(self.settings), request_timeout=self.settings.request_timeout,
                                     voice_map=self.settings.voice_mapping())
        await self.service.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.service.close()

    async def segment(self, text: str) -> AsyncIterator[np.ndarray]:
        from engine.service import SpeechParams

        stream = await self.service.open(SpeechParams(text=text, voice=self.voicing.voice, language=self.language,
                                                      instructions=self.voicing.instructions))
        try:
            async for chunk in stream:
                yield chunk.samples
        finally:
            await stream.aclose()


class RemoteSynth:
    """A running gateway: POST /v1/audio/speech, response_format pcm, read as it streams.

    Speed is not sent: the caller stretches the whole output once, so segment joins stay seamless.
    Requests go at bulk priority, so a long job never slows the people talking to the same server;
    a busy server (429/503) is waited for, as its Retry-After says, up to `patience` seconds.
    """

    def __init__(self, url: str, api_key: str | None, voicing: Voicing, patience: float = 300.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.voicing = voicing
        self.patience = patience

    async def __aenter__(self) -> RemoteSynth:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                        timeout=httpx.Timeout(30.0, read=600.0))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    def _body(self, text: str) -> dict:
        v = self.voicing
        body = {"model": "tts-1", "input": text, "voice": v.voice or "default", "response_format": "pcm",
                "priority": "bulk"}
        if v.language:
            body["language"] = v.language
        if v.instructions:
            body["instructions"] = v.instructions
        return body

    async def segment(self, text: str) -> AsyncIterator[np.ndarray]:
        import httpx

        deadline = time.monotonic() + self.patience
        while True:
            try:
                async with self.client.stream("POST", "/v1/audio/speech", json=self._body(text)) as response:
                    if response.status_code in (429, 503) and time.monotonic() < deadline:
                        await asyncio.sleep(float(response.headers.get("retry-after") or 1))
                        continue
                    if response.status_code != 200:
                        await response.aread()
                        raise SayError(f"{self.url} answered {response.status_code}: {error_message(response)}")
                    carry = b""
                    async for piece in response.aiter_bytes():
                        # A chunk boundary may split a 16-bit sample: keep the odd byte for the next one.
                        data = carry + piece
                        cut = len(data) - len(data) % 2
                        carry = data[cut:]
                        if cut:
                            yield np.frombuffer(data[:cut], "<i2").astype(np.float32) / 32768.0
                    return
            except httpx.TransportError as e:
                raise SayError(f"cannot reach {self.url}: {e}") from e


def error_message(response: object) -> str:
    """An error answer's message (OpenAI's error body), else the start of its text."""
    try:
        return response.json()["error"]["message"]  # type: ignore[attr-defined]
    except Exception:
        return response.text[:300]  # type: ignore[attr-defined]


class Progress:
    """One line on stderr, redrawn in place: a bar, segments done, audio so far, segments skipped."""

    def __init__(self, total: int, unit: str = "segments"):
        self.total = total
        self.unit = unit
        self.done = 0
        self.skipped = 0
        self.seconds = 0.0

    def step(self, seconds: float = 0.0, *, skipped: bool = False) -> None:
        self.done += 1
        self.skipped += skipped
        self.seconds += seconds
        if self.total > 1:
            self.draw()

    def draw(self) -> None:
        width = 30
        filled = round(width * self.done / self.total)
        skipped = f", {self.skipped} already done" if self.skipped else ""
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}, "
                         f"{self.seconds:.1f}s audio{skipped}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
