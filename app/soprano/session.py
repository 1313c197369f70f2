"""One Soprano-RS `/v1/stream` connection: `config`, `text`…, `flush`, `stop` in; `ready`, framed
PCM, `done`, `error` out. A thin layer over the gateway's own socket machinery (app/sockets/session.py):
Credentials, WsChannel (limits, idle timeout), TextFeed (IncrementalSegmenter, queued-text bound,
max-delay timer) and UtterancePlayer (one segment at a time through SpeechService, interactive
priority, its own admission slot per segment).

Decisions the Soprano README leaves open:
- `done` follows a `flush` once every segment of the text sent before it has been spoken (or has
  failed: a failed segment sends `error` first). An empty flush answers `done` at once (in order).
- `stop` stops the segment being spoken, drops the queued segments and the buffered text (a
  pending flush's `done` with them), and answers one `done`: no audio frame follows it. The socket
  stays open for more text.
- `chunk_id` counts binary frames from 1 on the connection (a segment is sent as frames of at most
  0.5 s); with `include_text`, the first frame of each segment carries that segment's text.
- `sample_rate` in the header is the gateway's 24000 (Soprano's is 32000); clients read it there.
- A `config` sets only the fields it names and applies to text not yet cut into segments.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath, PureWindowsPath

import msgspec
from litestar import WebSocket

from app.settings import Settings
from app.sockets.protocol import ProtocolError
from app.sockets.session import IdleTimeout, SocketSession, TextFeed, Utterance, UtterancePlayer
from app.soprano.protocol import (
    CLIENT_TYPES,
    ClientMessage,
    Config,
    Done,
    Error,
    Flush,
    FrameHeader,
    Ready,
    Stop,
    Text,
    frame,
)
from engine.base import Priority
from engine.errors import SpeechError
from engine.languages import normalize_language
from engine.service import SpeechParams, SpeechService
from engine.text import IncrementalSegmenter

# Soprano-RS's chunking defaults (its README's config example; --min-words 2).
DEFAULTS = Config(speed=1.0, language_id="auto", min_chars=24, min_words=2, max_chars=160, max_delay_ms=220,
                  include_text=False)


def voice_name(path: str) -> str:
    """The gateway voice a Soprano `voice_path` names: the file's stem ("/voices/emma.wav" → "emma")."""
    name = PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name
    return name.split(".", 1)[0] if not name.startswith(".") else name


class SopranoSession(SocketSession):
    def __init__(self, socket: WebSocket, service: SpeechService, settings: Settings, keys: tuple[str, ...]):
        super().__init__(socket, service, settings, keys)
        self.settings = settings
        self.session_id = str(uuid.uuid4())
        self.config = DEFAULTS
        self.voice: str | None = None  # None: the gateway's default voice
        self.language = "auto"
        self.player: UtterancePlayer
        self.feed: TextFeed
        self.segments = 0
        self.chunks = 0

    async def run(self) -> None:
        if not await self.open(lambda message: Error(message=message)):
            return
        self.player = UtterancePlayer(self.service, self.channel, self, wrap=self._frame)
        self.feed = TextFeed(self._segmenter(), self.player, self._speak)
        try:
            await self.channel.send(Ready(session_id=self.session_id))
            while not self.channel.closed:
                raw = await self.channel.receive(busy=lambda: self.player.busy)
                if raw is None:
                    break
                try:
                    await self._handle(self.channel.parse(raw, ClientMessage, CLIENT_TYPES))
                except (ProtocolError, SpeechError) as e:
                    await self.channel.send(Error(message=e.message))
        except IdleTimeout:
            await self.channel.send(Error(message=f"no message for {self.settings.ws_idle_timeout:g}s"))
            await self.channel.close(1000, "idle")
        finally:
            self.feed.close()
            await self.player.close()

    async def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, Config):
            await self._configure(message)
        elif isinstance(message, Text):
            await self.feed.push(message.text, "text")
        elif isinstance(message, Flush):
            self.feed.finish()
            self.player.enqueue(self._done)
        elif isinstance(message, Stop):
            self.player.cancel_all()
            self._renew_feed()
            await self.channel.send(Done())

    async def _done(self) -> None:
        await self.channel.send(Done())

    async def _configure(self, config: Config) -> None:
        """Check everything first, so that a refused config changes nothing."""
        changes = {f: getattr(config, f) for f in config.__struct_fields__ if getattr(config, f) is not msgspec.UNSET}
        named = changes.get("voice") or (voice_name(changes["voice_path"]) if changes.get("voice_path") else None)
        voice = self.service.registry.resolve(named).id if named else self.voice  # VoiceNotFound: an `error`
        language = normalize_language(changes.get("language_id", self.config.language_id))  # InvalidRequest
        self.config = msgspec.structs.replace(self.config, **changes)
        self.voice, self.language = voice, language
        pending = self._renew_feed()
        await self.feed.push(pending, "text")  # buffered text is cut by the new rules

    def _renew_feed(self) -> str:
        """A feed with the current rules in place of the old one; returns the text the old one held."""
        pending = self.feed.segmenter.pending
        self.feed.close()
        self.feed = TextFeed(self._segmenter(), self.player, self._speak)
        return pending

    def _segmenter(self) -> IncrementalSegmenter:
        c = self.config
        max_chars = min(c.max_chars, self.settings.max_segment_chars)
        return IncrementalSegmenter(
            max_chars=max_chars,
            clause_chars=min(max(120, c.min_chars), max_chars),  # a clause cut honours min_chars too
            min_chars=min(c.min_chars, max_chars),
            min_segment_words=c.min_words,
            min_words=c.min_words,
            max_delay_s=c.max_delay_ms / 1000 if c.max_delay_ms else None,
        )

    def _speak(self, segments: list[str]) -> None:
        for text in segments:
            params = SpeechParams(
                text=text,
                voice=self.voice,
                language=self.language,
                priority=Priority.INTERACTIVE,
                request_id=f"soprano_{self.session_id[:8]}-{self.segments}",
            )
            self.player.enqueue(Utterance(params, self.segments, speed=self.config.speed))
            self.segments += 1

    def _frame(self, utterance: Utterance, pcm: bytes) -> bytes:
        self.chunks += 1
        header = FrameHeader(chunk_id=self.chunks, sample_rate=utterance.sample_rate)
        if self.config.include_text and utterance.bytes_sent == 0:
            header.text = utterance.text
        return frame(header, pcm)

    # -- UtteranceEvents: Soprano has no per-segment events, only the frames --------------------
    async def begin(self, utterance: Utterance) -> None:
        pass

    async def end(self, utterance: Utterance) -> None:
        pass

    async def fail(self, utterance: Utterance, code: str, message: str, retry_after: float | None) -> None:
        await self.channel.send(Error(message=message), utterance)
