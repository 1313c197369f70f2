"""`/api/v1/speak`: the Makima speak protocol, and the spec's richer messages on the same socket.

The shipped Makima client sends `speak` without any `start` and understands binary PCM16 frames,
`audio_end` and `error`; it ignores every other type, so the extra events (`ready`, `started`,
`complete`, `cancelled`, `stopped`) are safe to send to it.

Decisions the spec leaves open:
- `cancel` stops the current utterance and drops the queued ones, then answers
  `{"type": "cancelled", "reason": "cancel", "utterances": n}` and, when n > 0, one `audio_end`: no
  frame of a cancelled utterance follows `cancelled`, and `audio_end` is the Makima hook's only way
  back to idle. It is not an `error`: Makima would show it to the user.
- `speak` with `priority: "high"` does the same (reason "replaced", sent only when something was
  stopped), then speaks.
- Frames are paced (`--ws-speak-lead`): at most that much audio is ahead of the client's real-time
  playback, because frames already sent when the user cancels are played by the shipped hook.
- Every 400-like refusal uses INVALID_TEXT (bad text, malformed frame, bad `start` parameter).
- A failure after audio went out sends `error`, then `audio_end` (the utterance's audio is over).
- `language` defaults to "auto" (the engine detects it) rather than the spec's "English".
"""

from __future__ import annotations

import time
import uuid

from litestar import WebSocket

from app.ops.auth import key_matches
from app.settings import Settings
from app.sockets.audio import PlaybackClock
from app.sockets.protocol import (
    ENCODINGS,
    SAMPLE_RATES,
    SPEAK_TYPES,
    UNAUTHORIZED,
    AudioEnd,
    Cancel,
    Cancelled,
    Capabilities,
    Complete,
    Error,
    ProtocolError,
    Ready,
    Speak,
    SpeakClientEvent,
    Start,
    Started,
    Stop,
    Stopped,
    Words,
    error_code,
)
from app.sockets.session import IdleTimeout, SocketSession, Utterance, UtterancePlayer
from engine.base import Priority
from engine.errors import SpeechError
from engine.languages import LANGUAGES, normalize_language
from engine.service import SpeechParams, SpeechService


class _Refused(Exception):
    """Authentication failed: error UNAUTHORIZED, then close 1008."""


def speakable_languages(service: SpeechService) -> list[str]:
    """Languages the configured voices can speak: all of Qwen3's with a Qwen engine, else the voices' own."""
    if any(name != "embedded" for name in service.engines):
        return list(LANGUAGES)
    return ["auto", *sorted({v.language for v in service.registry.list()} - {"auto"})]


class SpeakSession(SocketSession):
    """One `/api/v1/speak` connection: READY → (STARTED) → SPEAKING → READY … → STOPPED."""

    def __init__(self, socket: WebSocket, service: SpeechService, settings: Settings, keys: tuple[str, ...]):
        super().__init__(socket, service, settings, keys)
        self.session_id = f"ws_{uuid.uuid4().hex[:16]}"
        self.max_queued = settings.ws_max_queued_utterances
        self.lead = settings.ws_speak_lead
        # Defaults that make a bare `speak` work, as the shipped client needs.
        self.voice: str | None = None
        self.language = "auto"
        self.sample_rate = 24000
        self.encoding = "pcm16"
        self.timestamps = False
        self.authorized = False
        self.player: UtterancePlayer
        self._count = 0
        self._stopped = False

    async def run(self) -> None:
        verdict = self.credentials.verdict(self.keys)
        await self.channel.accept(self.credentials.subprotocol)
        if verdict == "denied":
            await self._refuse("invalid API key")
            return
        # No key at the handshake: the socket opens, but a `start` must bring one before any `speak`.
        self.authorized = verdict == "ok"
        player = UtterancePlayer(self.service, self.channel, self, self.max_queued, PlaybackClock(self.lead))
        self.player = player
        try:
            await self.channel.send(self._ready())
            while not self._stopped and not self.channel.closed:
                raw = await self.channel.receive(busy=lambda: player.busy)
                if raw is None:
                    break
                try:
                    await self._handle(self.channel.parse(raw, SpeakClientEvent, SPEAK_TYPES))
                except ProtocolError as e:
                    await self.channel.send(Error(code=e.code, message=e.message, recoverable=True))
                except SpeechError as e:
                    await self.channel.send(Error(code=error_code(e), message=e.message, recoverable=True,
                                                    retry_after=e.retry_after))
        except IdleTimeout:
            player.cancel_all()
            await self.channel.send(Stopped(reason="idle"))
            await self.channel.close(1000, "idle")
        except _Refused as e:
            player.cancel_all()
            await self._refuse(str(e))
        finally:
            await player.close()

    def _ready(self) -> Ready:
        try:
            default_voice = self.service.registry.resolve(None).id
        except SpeechError:
            default_voice = ""
        return Ready(
            session_id=self.session_id,
            voice_loaded=self.service.ready and bool(default_voice),
            voice=default_voice,
            capabilities=Capabilities(streaming=True, languages=speakable_languages(self.service),
                                      encodings=list(ENCODINGS), sample_rates=list(SAMPLE_RATES)),
        )

    async def _refuse(self, message: str) -> None:
        await self.channel.refuse(Error(code=UNAUTHORIZED, message=message, recoverable=False), "unauthorized")

    async def _handle(self, event: SpeakClientEvent) -> None:
        if not self.authorized and not isinstance(event, Start):
            # Anything else (even a harmless `cancel`) would let a keyless client hold the socket open.
            raise _Refused("this server needs an API key: send start with authToken first "
                           "(or connect with ?token=, a Bearer header or the auth.bearer.v1 subprotocol)")
        if isinstance(event, Start):
            await self._start(event)
        elif isinstance(event, Speak):
            await self._speak(event)
        elif isinstance(event, Cancel):
            await self._cancel("cancel")
        elif isinstance(event, Stop):
            self._stopped = True
            self.player.cancel_all()
            await self.channel.send(Stopped(reason=event.reason or "client"))
            await self.channel.close(1000, "stopped")

    async def _start(self, event: Start) -> None:
        if not self.authorized:
            if not key_matches(event.auth_token, self.keys):
                raise _Refused("invalid or missing authToken")
            self.authorized = True
        voice = self.service.registry.resolve(event.voice)  # VoiceNotFound → VOICE_NOT_FOUND, socket stays
        language = normalize_language(event.language)
        if event.timestamps:
            self.service.require_word_timing(voice, "timestamps")
        self.voice, self.language = voice.id, language
        self.sample_rate, self.encoding = event.rate, event.encoding
        self.timestamps = event.timestamps
        await self.channel.send(Started(sample_rate=self.sample_rate, encoding=self.encoding, voice=voice.id,
                                        language=language))

    async def _speak(self, event: Speak) -> None:
        if not self.authorized:
            raise _Refused("this server needs an API key: send start with authToken before speak "
                           "(or connect with ?token=, a Bearer header or the auth.bearer.v1 subprotocol)")
        text = event.text.strip()
        lead = len(event.text) - len(event.text.lstrip())  # word offsets index the text as sent
        if not text:
            raise ProtocolError("speak needs a non-empty text")
        if event.priority == "high":
            await self._cancel("replaced")
        self._count += 1
        params = SpeechParams(text=text, voice=self.voice, language=self.language, priority=Priority.INTERACTIVE,
                              request_id=f"{self.session_id}-{self._count}",
                              timestamps="timestamps" if self.timestamps else None)
        self.player.enqueue(Utterance(params, self._count, sample_rate=self.sample_rate, encoding=self.encoding,
                                      char_offset=lead))

    async def _cancel(self, reason: str) -> None:
        """`cancelled` (always for a cancel, only when something stopped for a replacement), then one
        `audio_end` when something stopped."""
        count = self.player.cancel_all()
        if count or reason == "cancel":
            await self.channel.send(Cancelled(reason=reason, utterances=count))
        if count:
            await self.channel.send(AudioEnd())

    # -- UtteranceEvents ------------------------------------------------------------------------
    async def begin(self, utterance: Utterance) -> None:
        return None

    async def words(self, utterance: Utterance, words: list[dict]) -> None:
        await self.channel.send(Words(words=words), utterance)

    async def end(self, utterance: Utterance) -> None:
        if await self.channel.send(AudioEnd(), utterance):
            await self.channel.send(Complete(
                duration_ms=round((time.monotonic() - utterance.started_at) * 1000),
                characters_processed=len(utterance.text),
                audio_length_ms=round(utterance.audio_seconds * 1000),
            ), utterance)

    async def fail(self, utterance: Utterance, code: str, message: str, retry_after: float | None) -> None:
        if await self.channel.send(Error(code=code, message=message, recoverable=True, retry_after=retry_after),
                                   utterance):
            if utterance.bytes_sent:
                await self.channel.send(AudioEnd(), utterance)
