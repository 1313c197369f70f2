"""StepWorker: the thread(s) that own one model instance and advance every stream on it step by step.

Model calls never run on the event loop. By default one thread steps them, so never two at once on
one instance (qwen_tts keeps per-call state on the model object); a model whose calls may overlap
(the embedded engine's ONNX session and read-only G2P) can have `threads` of them share one queue, so
a new stream starts on whichever thread frees first. A stream is stepped by one thread at a time.
Streams on one worker interleave at step granularity (a frame
for Qwen3, a sentence for the embedded engine), interactive before bulk, and within a priority
earliest due first: a new stream is due at once; a stream that says how long its items play (`pace`)
is next due when the audio it has made would run out, counted from its first item, less a margin for
making the next one; any other stream is due again when it has stepped (round robin). So a new
request's first audio goes ahead of other requests' later sentences as long as their audio lasts,
and a stream about to run out goes ahead of newcomers. Cancellation and deadlines are checked
before every step: a closed stream costs at most the step already running. A stream whose consumer
has not taken `max_ahead` of its items is not stepped until it takes one: a client that stops
reading stalls its own synthesis (its memory and the worker's time), not the others'.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .base import Priority
from .errors import DeadlineExceeded, EngineFailure, SpeechError

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()

StepFactory = Callable[[], Iterator["T | None"]]
"""Called on the worker thread; returns a generator that yields an item or None once per step."""

# A paced stream is due this long, plus twice its last step's time, before its audio would run out:
# room for its next step to be made and sent even when other streams are due at the same moment.
PACE_MARGIN = 0.25


@dataclass
class WorkerStats:
    """Counters a test or `/metrics` can read; the worker's threads write them (`StepWorker._add`)."""

    steps: int = 0
    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    deadline_exceeded: int = 0
    step_seconds: float = 0.0
    underruns: int = 0  # audio of paced streams made after the audio made before it had run out
    underrun_seconds: float = 0.0  # ... by how much, summed


@dataclass(eq=False)
class _Stream(Generic[T]):
    factory: Callable[[], Iterator[T | None]]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    priority: int
    deadline: float | None
    seq: int
    request_id: str
    gen: Iterator[T | None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set once the consumer comes back for the item after the first (or goes away): see first_item_handoff.
    handed_over: threading.Event = field(default_factory=threading.Event)
    steps: int = 0
    items: int = 0
    taken: int = 0  # items the consumer has taken (written under the worker's lock)
    parked: bool = False  # left out of the ready queues until the consumer catches up
    handoff: bool = True
    due: float = 0.0  # time.monotonic() by which its next step should start (earliest first)
    pace: Callable[[T], float] | None = None  # seconds of playback in an item
    played_from: float | None = None  # when its first playing item was made: playback starts no earlier
    made: float = 0.0  # seconds of playback made so far

    def put(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class StepWorker:
    """`threads` threads (one by default) stepping the streams submitted to it, from one queue."""

    def __init__(self, name: str, setup: Callable[[], None] | None = None, *, first_item_handoff: float = 0.0,
                 max_ahead: int = 4, threads: int = 1):
        """`first_item_handoff`: after a stream's first item, wait up to this long (seconds) for its consumer
        to come back for the next one before stepping any stream again. The consumer runs on the event loop
        of this process: a next step started at once competes with it for the cores and the GIL just when it
        has first audio to send, which cost HTTP and WebSocket clients several milliseconds on a busy CPU
        engine. The next item is not needed until the first has played, so a short pause costs no stream a
        stall; it costs the other streams on this worker up to this long, once per new stream.

        `max_ahead`: items a stream may have made and its consumer not yet taken before it is parked.
        `threads`: threads stepping streams at once; `setup` runs on each before its first step."""
        self.name = name
        self._handoff = first_item_handoff
        self._max_ahead = max(1, max_ahead)
        self.stats = WorkerStats()
        self._tally = threading.Lock()
        self._setup = setup
        self._cv = threading.Condition()
        self._ready: dict[int, list[_Stream]] = {}
        self._parked: set[_Stream] = set()
        self._seq = itertools.count()
        self._running = True
        self._active = 0
        self.threads = max(1, threads)
        self._threads = [threading.Thread(target=self._run, name=f"step-worker-{name}-{i}", daemon=True)
                         for i in range(self.threads)]
        for thread in self._threads:
            thread.start()

    @property
    def load(self) -> int:
        """Streams submitted and not yet finished (for picking the least busy worker)."""
        return self._active

    def snapshot(self) -> dict[str, float | int]:
        """Counters plus the streams in flight, as plain data for status pages and metrics."""
        return {**self.stats.__dict__, "active": self._active}

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run one function on this worker's thread (model loading, prompt computation)."""

        def once() -> Iterator[tuple[T]]:
            yield (fn(),)  # boxed: a bare None would read as "no item this step"

        return asyncio.ensure_future(_first(self.stream(once, priority=Priority.INTERACTIVE, handoff=False)))

    def stream(
        self,
        factory: Callable[[], Iterator[T | None]],
        *,
        priority: int = Priority.INTERACTIVE,
        deadline: float | None = None,
        request_id: str = "",
        handoff: bool = True,
        pace: Callable[[T], float] | None = None,
    ) -> AsyncIterator[T]:
        """Submit a stream; iterate the result to receive its items. Closing the iterator cancels it.

        `handoff=False`: no first-item handoff for this stream (a one-off call has no audio to send).
        `pace(item)`: seconds the item plays; the stream is then stepped by when its audio runs out."""
        loop = asyncio.get_running_loop()
        s = _Stream(factory, loop, asyncio.Queue(), int(priority), deadline, next(self._seq), request_id,
                    handoff=handoff, due=time.monotonic(), pace=pace)
        with self._cv:
            if not self._running:
                raise EngineFailure(f"worker {self.name} is stopped")
            self._active += 1
            self._ready.setdefault(s.priority, []).append(s)
            self._cv.notify()
        return self._consume(s)

    async def _consume(self, s: _Stream[T]) -> AsyncIterator[T]:
        try:
            async for item in queue_items(s.queue, _END):
                with self._cv:
                    s.taken += 1
                    if s.parked and s.items - s.taken < self._max_ahead:
                        self._unpark(s)
                yield item
                s.handed_over.set()  # the consumer is back: it has done what it does with an item
        finally:
            # Reached on normal end too; cancelling a finished stream is a no-op. Cancelled first: a worker
            # released from the handoff by a consumer that left must see it gone, not step it once more.
            s.cancelled.set()
            s.handed_over.set()
            with self._cv:
                if s.parked:
                    self._unpark(s)  # stepped once more, to be finished
                self._cv.notify()

    def _unpark(self, s: _Stream) -> None:
        """Under the lock: back in its ready queue."""
        s.parked = False
        self._parked.discard(s)
        self._ready[s.priority].append(s)
        self._cv.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    # -- worker thread ---------------------------------------------------------------------
    def _next_stream(self) -> _Stream | None:
        with self._cv:
            while self._running:
                for prio in sorted(self._ready):
                    if ready := self._ready[prio]:
                        s = min(ready, key=lambda r: (r.due, r.seq))
                        ready.remove(s)
                        return s
                self._cv.wait()
            return None

    def _requeue(self, s: _Stream) -> None:
        with self._cv:
            if self._running:
                self._ready[s.priority].append(s)
                self._cv.notify()  # another thread may be idle
                return
        self._finish(s, EngineFailure(f"worker {self.name} stopped"))  # the threads are leaving

    def _add(self, counter: str, value: float = 1) -> None:
        with self._tally:
            setattr(self.stats, counter, getattr(self.stats, counter) + value)

    def _schedule(self, s: _Stream, item: object, started: float, took: float) -> None:
        """When `s` is next due, after a step that started at `started`, took `took` and made `item`."""
        if s.pace is None:
            s.due = started + took  # round robin among the unpaced
            return
        seconds = s.pace(item) if item is not None else 0.0
        if seconds > 0:
            late = started + took - (s.played_from + s.made) if s.played_from is not None else 0.0
            if late > 0:  # its listener has been waiting for this audio
                self._add("underruns")
                self._add("underrun_seconds", late)
            if s.played_from is None:
                s.played_from = started + took
            s.made += seconds
        if s.played_from is not None:
            s.due = s.played_from + s.made - PACE_MARGIN - 2 * took

    def _finish(self, s: _Stream, outcome: object) -> None:
        if s.gen is not None:
            try:
                s.gen.close()  # runs the generator's cleanup on the thread that owns the model
            except Exception:  # noqa: BLE001 - cleanup must not kill the worker
                log.exception("worker %s: closing stream %s failed", self.name, s.request_id)
        with self._cv:
            self._active -= 1
        s.put(outcome)

    def _run(self) -> None:
        if self._setup is not None:
            self._setup()
        while True:
            s = self._next_stream()
            if s is None:
                break
            if s.cancelled.is_set():
                self._add("cancelled")
                self._finish(s, _END)
                continue
            if s.deadline is not None and time.monotonic() > s.deadline:
                self._add("deadline_exceeded")
                self._finish(s, DeadlineExceeded(f"synthesis passed its deadline after {s.steps} steps"))
                continue
            t0 = time.perf_counter()
            started = time.monotonic()
            try:
                if s.gen is None:
                    self._add("started")
                    s.gen = s.factory()
                item = next(s.gen)
            except StopIteration:
                self._add("finished")
                self._finish(s, _END)
                continue
            except SpeechError as e:
                self._add("failed")
                self._finish(s, e)
                continue
            except Exception as e:  # noqa: BLE001 - a broken request must not take the worker down
                log.exception("worker %s: stream %s failed", self.name, s.request_id)
                self._add("failed")
                self._finish(s, EngineFailure(f"synthesis failed: {type(e).__name__}: {e}"))
                continue
            finally:
                self._add("step_seconds", time.perf_counter() - t0)
            self._add("steps")
            s.steps += 1
            self._schedule(s, item, started, time.perf_counter() - t0)
            if item is not None:
                s.put(item)
                s.items += 1
                if s.items == 1 and s.handoff and self._handoff > 0:
                    s.handed_over.wait(self._handoff)
                with self._cv:
                    if s.items - s.taken >= self._max_ahead and not s.cancelled.is_set() and self._running:
                        s.parked = True  # the consumer's next take puts it back
                        self._parked.add(s)
                        continue
            self._requeue(s)
        # Shutting down: fail whatever is still waiting so no consumer hangs.
        with self._cv:
            left = [s for q in self._ready.values() for s in q] + list(self._parked)
            self._ready.clear()
            self._parked.clear()
        for s in left:
            self._finish(s, EngineFailure(f"worker {self.name} stopped"))


async def queue_items(queue: asyncio.Queue, end: object) -> AsyncIterator:
    """The items put on `queue` until `end`; an exception put on it is raised here."""
    while True:
        item = await queue.get()
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


async def _first(it: AsyncIterator[tuple[T]]) -> T:
    try:
        async for (item,) in it:
            return item
        raise EngineFailure("worker call returned nothing")
    finally:
        await it.aclose()  # type: ignore[attr-defined]
