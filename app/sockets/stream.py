"""`/v1/audio/speech/stream`: text streamed in (LLM output), speech streamed out, sentence by sentence.

vLLM-Omni's message names, so its clients work: `session.config`, any number of `input.text`
pieces split anywhere, `input.done` (flush; `session.done` follows the last sentence's audio, and a
new `session.config` may start another session on the same socket), `session.close` (finish what
was sent, then close 1000). Each sentence goes out as `audio.start` (index and text), binary PCM
frames, `audio.done`. Sentences are cut by IncrementalSegmenter as soon as they are complete (or a
long clause, or after a short pause with enough words) and spoken one after another while more text
keeps arriving.
"""

from __future__ import annotations

import uuid

import msgspec
from litestar import WebSocket

from app.settings import Settings
from app.sockets.protocol import (
    STREAM_TYPES,
    TIMEOUT,
    UNAUTHORIZED,
    AudioDone,
    AudioStart,
    AudioTimestamps,
    InputDone,
    InputText,
    ProtocolError,
    SessionClose,
    SessionConfig,
    SessionDone,
    StreamClientEvent,
    StreamError,
    error_code,
)
from app.sockets.session import IdleTimeout, SocketSession, TextFeed, Utterance, UtterancePlayer
from app.speech.serving import model_engine
from engine.base import Priority
from engine.errors import SpeechError
from engine.languages import normalize_language
from engine.service import SpeechParams, SpeechService
from engine.text import IncrementalSegmenter


class TextStreamSession(SocketSession):
    """One connection; sessions (config → text … → done) follow each other on it."""

    def __init__(self, socket: WebSocket, service: SpeechService, settings: Settings, keys: tuple[str, ...]):
        super().__init__(socket, service, settings, keys)
        self.settings = settings
        self.socket_id = f"wss_{uuid.uuid4().hex[:16]}"
        self.player: UtterancePlayer
        self.config: SessionConfig | None = None
        self.engine: str | None = None
        self.feed: TextFeed | None = None  # None: between sessions
        self.sentences = 0
        self._sessions = 0

    async def run(self) -> None:
        if not await self.open(lambda message: StreamError(code=UNAUTHORIZED, message=message, recoverable=False)):
            return
        self.player = UtterancePlayer(self.service, self.channel, self)
        try:
            while not self.channel.closed:
                raw = await self.channel.receive(busy=lambda: self.player.busy)
                if raw is None:
                    break
                try:
                    event = self.channel.parse(raw, StreamClientEvent, STREAM_TYPES)
                    if isinstance(event, SessionClose):
                        await self._close()
                        break
                    await self._handle(event)
                except ProtocolError as e:
                    await self.channel.send(StreamError(code=e.code, message=e.message))
                except SpeechError as e:
                    await self.channel.send(StreamError(code=error_code(e), message=e.message))
        except IdleTimeout:
            await self.channel.send(StreamError(code=TIMEOUT, recoverable=False,
                                                message=f"no message for {self.settings.ws_idle_timeout:g}s"))
            await self.channel.close(1000, "idle")
        finally:
            if self.feed is not None:
                self.feed.close()
            await self.player.close()

    async def _handle(self, event: StreamClientEvent) -> None:
        if isinstance(event, SessionConfig):
            self._configure(event)
        elif isinstance(event, InputText):
            await self._input(event.text)
        elif isinstance(event, InputDone):
            self._finish()

    def _configure(self, config: SessionConfig) -> None:
        if self.feed is not None:
            raise ProtocolError("session.config is only accepted before the first input.text or after "
                                "input.done")
        engine = model_engine(config.model, set(self.service.engines)) if config.model else None
        voice = self.service.registry.resolve(config.voice, prefer=engine)  # VoiceNotFound: reported, kept open
        normalize_language(config.language)  # refuse an unknown language now, not at the first sentence
        if config.timestamps:
            self.service.require_word_timing(voice, "timestamps")
        self.config, self.engine = msgspec.structs.replace(config, voice=voice.id), engine

    def _begin_session(self) -> TextFeed:
        if self.config is None:
            self.config = SessionConfig()  # text without a config: the defaults, as a bare `speak` has
        self._sessions += 1
        self.sentences = 0
        self.feed = TextFeed(IncrementalSegmenter(max_chars=self.settings.max_segment_chars), self.player,
                             self._speak)
        return self.feed

    async def _input(self, text: str) -> None:
        await (self.feed or self._begin_session()).push(text, "input.text")

    def _finish(self) -> None:
        (self.feed or self._begin_session()).finish()
        total = self.sentences
        self.feed = None  # a new session.config may come now; its sentences queue behind this one

        async def done() -> None:
            await self.channel.send(SessionDone(total_sentences=total))

        self.player.enqueue(done)

    async def _close(self) -> None:
        if self.feed is not None:
            self._finish()
        await self.player.wait_idle()
        await self.channel.close(1000, "session.close")

    def _speak(self, sentences: list[str]) -> None:
        config = self.config
        assert config is not None
        for text in sentences:
            params = SpeechParams(
                text=text,
                voice=config.voice,
                language=normalize_language(config.language),
                instructions=config.instructions or None,
                seed=config.seed,
                priority=Priority.INTERACTIVE,
                request_id=f"{self.socket_id}-{self._sessions}-{self.sentences}",
                engine=self.engine,
                timestamps="timestamps" if config.timestamps else None,
            )
            self.player.enqueue(Utterance(params, self.sentences, sample_rate=config.sample_rate,
                                          speed=config.speed))
            self.sentences += 1

    # -- UtteranceEvents ------------------------------------------------------------------------
    async def begin(self, utterance: Utterance) -> None:
        await self.channel.send(AudioStart(sentence_index=utterance.index, sentence_text=utterance.text,
                                           sample_rate=utterance.sample_rate), utterance)

    async def words(self, utterance: Utterance, words: list[dict]) -> None:
        await self.channel.send(AudioTimestamps(sentence_index=utterance.index, words=words), utterance)

    async def end(self, utterance: Utterance) -> None:
        await self.channel.send(AudioDone(sentence_index=utterance.index, total_bytes=utterance.bytes_sent),
                                utterance)

    async def fail(self, utterance: Utterance, code: str, message: str, retry_after: float | None) -> None:
        await self.channel.send(StreamError(code=code, message=f"sentence {utterance.index}: {message}"), utterance)
        await self.channel.send(AudioDone(sentence_index=utterance.index, total_bytes=utterance.bytes_sent,
                                          error=True), utterance)
