"""What the speech WebSockets share: credentials, one send path, receiving with limits, the
utterance player that speaks one utterance at a time through SpeechService, and the text feed that
cuts text streamed in into segments to speak.

Two tasks per connection: the route's receive loop (reads client frames, so `cancel` is seen while
audio is going out) and the player's worker (synthesizes queued utterances in order, never two at
once). Every utterance takes its own admission slot through `SpeechService.open` and gives it back
when it ends, so an open but quiet socket holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from litestar import WebSocket

from app.ops.auth import bearer_token, key_matches
from app.sockets.audio import PcmFramer, PlaybackClock
from app.sockets.protocol import RATE_LIMITED, SYNTHESIS_ERROR, ProtocolError, decode_event, error_code
from engine.base import AudioChunk
from engine.errors import SpeechError
from engine.service import SpeechParams, SpeechService
from engine.text import IncrementalSegmenter
from engine.words import SentenceWords

log = logging.getLogger("app.ws")

AUTH_SUBPROTOCOL = "auth.bearer.v1"
KEY_NEEDED = ("this server needs an API key: send 'Authorization: Bearer <key>', ?token=<key> "
              "or the subprotocols 'auth.bearer.v1, <key>'")
POLICY_VIOLATION = 1008


# -- credentials ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """The key a client presented at the handshake, and the subprotocol to accept with."""

    token: str | None
    subprotocol: str | None

    @classmethod
    def of(cls, socket: WebSocket) -> Credentials:
        """`Authorization: Bearer`, then `?token=`, then `Sec-WebSocket-Protocol: auth.bearer.v1, <key>`.

        Browsers cannot set headers on a WebSocket, hence the query and subprotocol forms.
        """
        offered = [p.strip() for p in socket.scope.get("subprotocols") or []]
        token = bearer_token(socket.headers.get("authorization")) or socket.query_params.get("token") or None
        subprotocol = AUTH_SUBPROTOCOL if AUTH_SUBPROTOCOL in offered else None
        if subprotocol and token is None:
            token = next((p for p in offered if p != AUTH_SUBPROTOCOL), None)
        return cls(token, subprotocol)

    def verdict(self, keys: tuple[str, ...]) -> str:
        """"ok" (open server or a valid key), "denied" (a wrong key) or "missing" (no key presented)."""
        if not keys:
            return "ok"
        if self.token is None:
            return "missing"
        return "ok" if key_matches(self.token, keys) else "denied"


class IdleTimeout(Exception):
    """No client frame for the idle timeout while nothing was being spoken."""


# -- the socket -------------------------------------------------------------------------------
class WsChannel:
    """One send path (a lock keeps JSON events and audio frames in a single order) and a receive path
    with the idle timeout and the frame-size bound."""

    def __init__(self, socket: WebSocket, *, idle_timeout: float, max_message_bytes: int):
        self.socket = socket
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.closed = False
        self._lock = asyncio.Lock()
        self._last_activity = time.monotonic()

    async def accept(self, subprotocol: str | None) -> None:
        await self.socket.accept(subprotocols=subprotocol)

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    async def send(self, event: Any, utterance: Utterance | None = None) -> bool:
        """Send a JSON event; skipped (False) once `utterance` is cancelled or the socket is gone."""
        return await self._send(msgspec.json.encode(event).decode(), utterance)

    async def send_text(self, text: str) -> bool:
        """Send an event already encoded as JSON text (one encoding for many sockets, or built piece by piece)."""
        return await self._send(text, None)

    async def send_audio(self, frame: bytes, utterance: Utterance) -> bool:
        return await self._send(frame, utterance)

    async def _send(self, data: str | bytes, utterance: Utterance | None) -> bool:
        async with self._lock:
            # Checked under the lock: a cancel acknowledged after this point can never be overtaken.
            if self.closed or (utterance is not None and utterance.cancelled):
                return False
            try:
                if isinstance(data, bytes):
                    await self.socket.send_bytes(data)
                else:
                    await self.socket.send_text(data)
            except Exception as e:  # noqa: BLE001 - any send failure means the client is gone
                log.debug("websocket send failed: %r", e)
                self.closed = True
                return False
            if utterance is not None and isinstance(data, bytes):
                utterance.bytes_sent += len(data)
            return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(Exception):
                await self.socket.close(code, reason)

    async def refuse(self, event: Any, reason: str) -> None:
        """Send the error first, then close with 1008 (policy violation)."""
        await self.send(event)
        await self.close(POLICY_VIOLATION, reason)

    async def receive(self, busy: Callable[[], bool]) -> str | bytes | None:
        """The next client frame; None when the client left. Raises IdleTimeout.

        Time spent speaking does not count as idle: a long answer is not a silent client.
        """
        while True:
            remaining = self.idle_timeout - (time.monotonic() - self._last_activity)
            if remaining <= 0:
                if not busy():
                    raise IdleTimeout
                self.touch()
                continue
            try:
                message = await asyncio.wait_for(self.socket.receive(), remaining)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - litestar raises WebSocketDisconnect after a close
                return None
            if message["type"] != "websocket.receive":
                return None
            self.touch()
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")

    def parse(self, raw: str | bytes, union: Any, known: tuple[str, ...]) -> Any:
        """Size and frame-kind checks, then `decode_event`; raises ProtocolError."""
        if isinstance(raw, bytes):
            raise ProtocolError("binary frames are not accepted; send JSON text frames")
        if len(raw) > self.max_message_bytes // 4 and len(raw.encode()) > self.max_message_bytes:
            raise ProtocolError(f"message larger than {self.max_message_bytes} bytes")
        return decode_event(raw, union, known)


class SocketSession:
    """What every speech socket session starts from: the service, the keys, the channel, the credentials."""

    def __init__(self, socket: WebSocket, service: SpeechService, settings: Any, keys: tuple[str, ...]):
        self.service = service
        self.keys = keys
        self.channel = WsChannel(socket, idle_timeout=settings.ws_idle_timeout,
                                 max_message_bytes=settings.ws_max_message_bytes)
        self.credentials = Credentials.of(socket)

    async def open(self, refusal: Callable[[str], Any]) -> bool:
        """Accept the socket; when its key is wrong or missing (and keys are set), send `refusal(message)`
        and close with 1008. A refused client reads why before the close, which browsers hide."""
        verdict = self.credentials.verdict(self.keys)
        await self.channel.accept(self.credentials.subprotocol)
        if verdict == "ok":
            return True
        await self.channel.refuse(refusal("invalid API key" if verdict == "denied" else KEY_NEEDED), "unauthorized")
        return False


# -- utterances -------------------------------------------------------------------------------
@dataclass(eq=False)
class Utterance:
    """One text to speak, with the audio format it goes out in."""

    params: SpeechParams
    index: int
    sample_rate: int = 24000
    encoding: str = "pcm16"
    speed: float = 1.0
    char_offset: int = 0  # where `params.text` starts in the text the client sent (word timestamps' offsets)
    cancelled: bool = False
    bytes_sent: int = 0
    audio_seconds: float = 0.0
    started_at: float = 0.0
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return self.params.text

    @property
    def speakable(self) -> bool:
        # "..." or "—" alone gives an engine nothing to say; it is announced but not synthesized.
        return any(ch.isalnum() for ch in self.text)


class UtteranceEvents(Protocol):
    """What a protocol sends around one utterance's binary frames.

    Optional, looked up with `getattr`: `async def words(self, utterance, words: list[dict])`, one sentence's
    word timestamps (JSON-ready: seconds from the utterance's first audio, offsets into the client's text)
    for an utterance whose params ask for them; sent as soon as they are known, which is before any audio
    of the next sentence and before `end`."""

    async def begin(self, utterance: Utterance) -> None: ...

    async def end(self, utterance: Utterance) -> None: ...

    async def fail(self, utterance: Utterance, code: str, message: str, retry_after: float | None) -> None: ...


Marker = Callable[[], Awaitable[None]]
Wrap = Callable[["Utterance", bytes], bytes]


class UtterancePlayer:
    """A FIFO of utterances (and markers: callbacks run in queue order) spoken one at a time."""

    def __init__(self, service: SpeechService, channel: WsChannel, events: UtteranceEvents,
                 max_queued: int | None = None, clock: PlaybackClock | None = None, wrap: Wrap | None = None):
        self.service = service
        self.channel = channel
        self.events = events
        self.wrap = wrap  # a protocol that frames each binary message (a header before the PCM)
        self.max_queued = max_queued
        self.clock = clock or PlaybackClock(0.0)
        self.current: Utterance | None = None
        self._pending: deque[Utterance | Marker] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker = asyncio.create_task(self._work())

    @property
    def pending(self) -> list[Utterance]:
        return [u for u in self._pending if isinstance(u, Utterance)]

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def enqueue(self, item: Utterance | Marker) -> None:
        """Queue behind everything already queued; ProtocolError(RATE_LIMITED) when the queue is full."""
        if isinstance(item, Utterance) and self.max_queued is not None and len(self.pending) >= self.max_queued:
            raise ProtocolError(
                f"too many utterances queued on this socket ({self.max_queued}); wait for audio_end or cancel",
                RATE_LIMITED,
            )
        self._pending.append(item)
        self._idle.clear()
        self._wake.set()

    def cancel_all(self) -> int:
        """Stop the current utterance and drop the queue; returns how many utterances that hit."""
        dropped = self.pending
        self._pending.clear()
        for utterance in dropped:
            utterance.cancelled = True
        count = len(dropped)
        current = self.current
        if current is not None and not current.cancelled and current.task is not None and not current.task.done():
            current.cancelled = True  # set before anything awaits: no frame of it is sent from here on
            current.task.cancel()  # the engine stream closes in the task's finally, within one step
            count += 1
        if self.current is None:
            self._idle.set()
        if count:
            self.clock.reset()
        return count

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        self.cancel_all()
        self._worker.cancel()
        tasks = [self._worker, *([self.current.task] if self.current and self.current.task else [])]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            item = self._pending.popleft()
            if not isinstance(item, Utterance):
                await item()
                continue
            self.current = item
            item.task = asyncio.create_task(self._play(item))
            try:
                await asyncio.wait({item.task})
            finally:
                self.current = None
            self.channel.touch()
            if self.channel.closed:
                self.cancel_all()  # nobody is listening: synthesize nothing more

    async def _play(self, utterance: Utterance) -> None:
        utterance.started_at = time.monotonic()
        try:
            await self.events.begin(utterance)
            if utterance.speakable:
                await self._synthesize(utterance)
            await self.events.end(utterance)
        except SpeechError as e:
            if e.status >= 500:
                log.warning("utterance %s failed: %s", utterance.params.request_id, e.message)
            await self.events.fail(utterance, error_code(e), e.message, e.retry_after)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client must hear about it, the socket must survive
            log.exception("utterance %s failed", utterance.params.request_id)
            await self.events.fail(utterance, SYNTHESIS_ERROR, "internal error during synthesis", None)

    async def _synthesize(self, utterance: Utterance) -> None:
        """Synthesis and sending run apart: the paced sender may trail the engine by the whole
        utterance, and the engine's admission slot is released as soon as synthesis ends. The sender
        cuts and converts frames as it sends them: a sentence-long chunk converted whole would hold
        its first frame back for the conversion of all the others."""
        chunks: asyncio.Queue[AudioChunk | None] = asyncio.Queue()
        first_sent = asyncio.Event()
        producer = asyncio.create_task(self._produce(utterance, chunks, first_sent))
        framer: PcmFramer | None = None
        try:
            while (chunk := await chunks.get()) is not None:
                if framer is None:
                    framer = PcmFramer(utterance.sample_rate, utterance.encoding, utterance.speed,
                                       source_rate=chunk.sample_rate, frame_seconds=self.clock.frame_seconds)
                frames = framer.push(chunk.samples)
                if not first_sent.is_set():
                    sent = await self._send_frames(itertools.islice(frames, 1), framer, utterance)
                    first_sent.set()
                    if not sent:
                        return
                if not await self._send_frames(frames, framer, utterance):
                    return
            if framer is not None and not await self._send_frames(framer.flush(), framer, utterance):
                return
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            if framer is not None:
                framer.close()
                utterance.audio_seconds = framer.seconds_out
        producer.result()  # a synthesis error after the last frame sent is reported now

    async def _words(self, utterance: Utterance, words: SentenceWords) -> None:
        send = getattr(self.events, "words", None)
        if send is not None:
            await send(utterance, words.wire(utterance.speed, utterance.char_offset))

    async def _send_frames(self, frames: Iterable[bytes], framer: PcmFramer, utterance: Utterance) -> bool:
        for frame in frames:
            await self.clock.before_send(len(frame) / framer.bytes_per_sample / framer.sample_rate)
            if not await self.channel.send_audio(self.wrap(utterance, frame) if self.wrap else frame, utterance):
                return False
        return True

    async def _produce(self, utterance: Utterance, chunks: asyncio.Queue[AudioChunk | None],
                       first_sent: asyncio.Event) -> None:
        try:
            stream = await self.service.open(utterance.params)  # a refusal (busy) ends the sender too
            try:
                async with contextlib.aclosing(aiter(stream)) as audio:
                    async for chunk in audio:
                        if isinstance(chunk, SentenceWords):
                            # Straight out, ahead of the paced audio: a player highlights words as they play.
                            await self._words(utterance, chunk)
                            continue
                        chunks.put_nowait(chunk)
                        # Asking for the next chunk lets the engine step again (StepWorker's first_item_handoff):
                        # not before the first frame is out.
                        await first_sent.wait()
            finally:
                await stream.aclose()
        finally:
            chunks.put_nowait(None)


# -- text streamed in -------------------------------------------------------------------------
# Text accepted but not yet spoken, per socket: a client far faster than speech is told to slow down
# (vLLM-Omni bounds the same buffer at 100k characters).
MAX_PENDING_CHARS = 100_000
OFF_LOOP_CHARS = 256  # pieces longer than this are segmented on a worker thread


class TextFeed:
    """Text streamed in, cut into segments to speak: an IncrementalSegmenter, the bound on text
    waiting to be spoken (buffered here or queued in the player), and the timer that polls the
    segmenter when it says text is due (a pause, or a maximum delay), so text left without a
    boundary is not held forever."""

    def __init__(self, segmenter: IncrementalSegmenter, player: UtterancePlayer,
                 speak: Callable[[list[str]], None]):
        self.segmenter = segmenter
        self.player = player
        self.speak = speak
        self._timer: asyncio.TimerHandle | None = None

    async def push(self, text: str, what: str) -> None:
        """Segment `text` and speak what is complete; ProtocolError(RATE_LIMITED) naming `what` (the
        protocol's message) when too much text is waiting."""
        waiting = len(self.segmenter.pending) + sum(len(u.text) for u in self.player.pending)
        if waiting + len(text) > MAX_PENDING_CHARS:
            raise ProtocolError(f"more than {MAX_PENDING_CHARS} characters waiting to be spoken; this {what} was "
                                "dropped, send it again once audio has caught up", RATE_LIMITED)
        if len(text) > OFF_LOOP_CHARS:
            # Segmenting is linear, but a few ms per large piece times many sockets still adds up on the
            # event loop; the timer is stopped first so nothing else touches the segmenter.
            self.close()
            segments = await asyncio.to_thread(self.segmenter.push, text)
        else:
            segments = self.segmenter.push(text)  # LLM tokens: a thread hop would cost more than the work
        self.speak(segments)
        self._arm()

    def finish(self) -> None:
        """Speak everything still buffered."""
        self.close()
        self.speak(self.segmenter.finish())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.close()
        due = self.segmenter.due_in()
        if due is not None:
            self._timer = asyncio.get_running_loop().call_later(due + 0.02, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self.speak(self.segmenter.poll())
        self._arm()
