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

import asyncio
import uuid

import msgspec
from litestar import WebSocket

from app.settings import Settings
from app.sockets.protocol import (
    RATE_LIMITED,
    STREAM_TYPES,
    TIMEOUT,
    UNAUTHORIZED,
    AudioDone,
    AudioStart,
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
from app.sockets.session import IdleTimeout, SocketSession, Utterance, UtterancePlayer
from app.speech.serving import model_engine
from engine.base import Priority
from engine.errors import SpeechError
from engine.languages import normalize_language
from engine.service import SpeechParams, SpeechService
from engine.text import IncrementalSegmenter

# Text accepted but not yet spoken, per socket: an LLM far faster than speech is told to slow down
# (vLLM-Omni bounds the same buffer at 100k characters).
MAX_PENDING_CHARS = 100_000
OFF_LOOP_CHARS = 256  # input.text pieces longer than this are segmented on a worker thread


class TextStreamSession(SocketSession):
    """One connection; sessions (config → text … → done) follow each other on it."""

    def __init__(self, socket: WebSocket, service: SpeechService, settings: Settings, keys: tuple[str, ...]):
        super().__init__(socket, service, settings, keys)
        self.settings = settings
        self.socket_id = f"wss_{uuid.uuid4().hex[:16]}"
        self.player: UtterancePlayer
        self.config: SessionConfig | None = None
        self.engine: str | None = None
        self.segmenter: IncrementalSegmenter | None = None  # None: between sessions
        self.sentences = 0
        self._sessions = 0
        self._flush_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        verdict = self.credentials.verdict(self.keys)
        await self.channel.accept(self.credentials.subprotocol)
        if verdict != "ok":
            message = "invalid API key" if verdict == "denied" else (
                "this server needs an API key: send 'Authorization: Bearer <key>', ?token=<key> "
                "or the subprotocols 'auth.bearer.v1, <key>'")
            await self.channel.refuse(StreamError(code=UNAUTHORIZED, message=message, recoverable=False),
                                      "unauthorized")
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
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            await self.player.close()

    async def _handle(self, event: StreamClientEvent) -> None:
        if isinstance(event, SessionConfig):
            self._configure(event)
        elif isinstance(event, InputText):
            await self._input(event.text)
        elif isinstance(event, InputDone):
            self._finish()

    def _configure(self, config: SessionConfig) -> None:
        if self.segmenter is not None:
            raise ProtocolError("session.config is only accepted before the first input.text or after "
                                "input.done")
        engine = model_engine(config.model, set(self.service.engines)) if config.model else None
        voice = self.service.registry.resolve(config.voice, prefer=engine)  # VoiceNotFound: reported, kept open
        normalize_language(config.language)  # refuse an unknown language now, not at the first sentence
        self.config, self.engine = msgspec.structs.replace(config, voice=voice.id), engine

    def _begin_session(self) -> IncrementalSegmenter:
        if self.config is None:
            self.config = SessionConfig()  # text without a config: the defaults, as a bare `speak` has
        self._sessions += 1
        self.sentences = 0
        self.segmenter = IncrementalSegmenter(max_chars=self.settings.max_segment_chars)
        return self.segmenter

    async def _input(self, text: str) -> None:
        segmenter = self.segmenter or self._begin_session()
        waiting = len(segmenter.pending) + sum(len(u.text) for u in self.player.pending)
        if waiting + len(text) > MAX_PENDING_CHARS:
            raise ProtocolError(f"more than {MAX_PENDING_CHARS} characters waiting to be spoken; this input.text "
                                "was dropped, send it again once audio has caught up", RATE_LIMITED)
        if len(text) > OFF_LOOP_CHARS:
            # Segmenting is linear, but a few ms per large piece times many sockets still adds up on the
            # event loop; the idle-flush timer is stopped first so nothing else touches the segmenter.
            self._cancel_flush_timer()
            sentences = await asyncio.to_thread(segmenter.push, text)
        else:
            sentences = segmenter.push(text)  # LLM tokens: a thread hop would cost more than the work
        self._speak(sentences)
        self._arm_flush_timer(segmenter)

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _arm_flush_timer(self, segmenter: IncrementalSegmenter) -> None:
        """Release text that sits without a boundary once the segmenter's pause has passed."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if segmenter.pending.strip():
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(segmenter.idle_flush_s + 0.02, self._idle_flush, segmenter)

    def _idle_flush(self, segmenter: IncrementalSegmenter) -> None:
        self._flush_timer = None
        if segmenter is self.segmenter:
            self._speak(segmenter.poll())

    def _finish(self) -> None:
        segmenter = self.segmenter or self._begin_session()
        self._speak(segmenter.finish())
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        total = self.sentences
        self.segmenter = None  # a new session.config may come now; its sentences queue behind this one

        async def done() -> None:
            await self.channel.send(SessionDone(total_sentences=total))

        self.player.enqueue(done)

    async def _close(self) -> None:
        if self.segmenter is not None:
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
            )
            self.player.enqueue(Utterance(params, self.sentences, sample_rate=config.sample_rate,
                                          speed=config.speed))
            self.sentences += 1

    # -- UtteranceEvents ------------------------------------------------------------------------
    async def begin(self, utterance: Utterance) -> None:
        await self.channel.send(AudioStart(sentence_index=utterance.index, sentence_text=utterance.text,
                                           sample_rate=utterance.sample_rate), utterance)

    async def end(self, utterance: Utterance) -> None:
        await self.channel.send(AudioDone(sentence_index=utterance.index, total_bytes=utterance.bytes_sent),
                                utterance)

    async def fail(self, utterance: Utterance, code: str, message: str, retry_after: float | None) -> None:
        await self.channel.send(StreamError(code=code, message=f"sentence {utterance.index}: {message}"), utterance)
        await self.channel.send(AudioDone(sentence_index=utterance.index, total_bytes=utterance.bytes_sent,
                                          error=True), utterance)
