"""Continuous batching: one scheduler per model instance steps every active stream in one batch.

Each request becomes a `StreamJob` (its sentences, knobs, seed, priority, deadline). The scheduler
runs as one long stream on the instance's StepWorker (so model loads and clone prompts still take
their turn between iterations), and each iteration is:

  1. rows whose client went away or whose deadline passed leave the batch (their slot is free now);
  2. one talker step for every running row;
  3. waiting jobs join (their sentences prefilled together, one talker forward, into free slots):
     interactive before bulk, then first come first served, as many as fit `prefill_tokens` new
     prompt positions (the first always joins; `prefill_rows` caps the count): cheap prompts join
     together, a burst of costly ones is spread over iterations oldest first, so the first of them
     hears audio after its own share, not everyone's, and running rows stall for one bounded
     prefill at a time; rows of a voice whose prefix this join computes for the first time are held
     back and join from it in a second, cheap prefill before the frame step (`_shares_most`);
  4. one frame for every row (`FrameBatch.sample_and_predict`), each row's codes handed to its own
     stateful codec decoder when its chunk is due (first after `first_chunk_frames`, then chunks
     doubling up to `chunk_frames`, so a client playing from its first chunk never waits while
     synthesis runs faster than real time), the audio delivered to its async consumer;
  5. rows that ended their sentence (EOS, frame budget, full cache) leave; a job with more
     sentences queues again at the front, keeping its decoder-free restart cheap.

Randomness is per job (a `torch.Generator` from its seed, or a random one), so a seeded request
gives the same audio whatever else runs (up to float rounding between batch shapes, see
`frame_batch`). Per voice and instance, two things are computed once and copied for each stream
(bounded LRUs): a clone voice's decoder state after priming with its reference codes, and the talker
cache of a prompt's voice prefix (`PreparedInput.prefix_len`: the positions before the text to say),
taken from the first row prefilled with it; later rows of that voice prefill only the rest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..base import Priority
from ..errors import DeadlineExceeded, EngineFailure, InvalidRequest, SpeechError
from ..lru import LRU
from ..worker import StepWorker, queue_items
from .codec_stream import StreamingCodecDecoder, decode_together
from .frame_batch import FrameBatch, Join
from .streaming import PreparedInput, row_settings

log = logging.getLogger(__name__)

_END = object()
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # histogram buckets of rows per decode step


@dataclass(eq=False)
class StreamJob:
    """One request on a scheduler. `prepare(i)` builds sentence i's `PreparedInput` on the worker."""

    sentences: int
    prepare: Callable[[int], Any]
    params: list[Any]  # GenerationParams per sentence
    seed: int | None
    priority: int = Priority.INTERACTIVE
    deadline: float | None = None
    request_id: str = ""
    marks: bool = False  # put a SentenceDone after each sentence's last audio
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    gone: bool = False
    seq: int = 0

    def put(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


@dataclass(frozen=True)
class SentenceDone:
    """On a job's queue (when it asks for `marks`) after the last audio of its sentence `index`."""

    index: int


@dataclass(eq=False)
class _Row:
    """A job's place in the batch while one of its sentences is generated (worker thread only)."""

    job: StreamJob
    sentence: int
    generator: Any
    params: Any
    max_frames: int
    decoder: Any = None
    ref: Any = None  # ICL reference codes, primed into the decoder at the first decode
    pending: list = field(default_factory=list)
    due: int = 0
    frames: int = 0
    prepared: Any = None  # (PreparedInput, RowSettings) of the sentence about to join, once built


@dataclass
class SchedulerStats:
    """Counters for tests and /metrics; written on the worker thread only."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    deadline_exceeded: int = 0
    decode_steps: int = 0
    prefills: int = 0
    graph_replays: int = 0
    eager_steps: int = 0
    decode_seconds: float = 0.0  # whole iterations: steps, joins, codec decoding, delivery
    codec_seconds: float = 0.0  # ... of which turning due codes into audio
    primed: int = 0  # clone-voice decoder states computed from reference codes
    primed_reused: int = 0  # ... and copied from the per-instance cache instead
    prefill_seconds: float = 0.0  # in prompt prefills (joins)
    prefill_tokens: int = 0  # prompt positions prefilled
    prefix_hits: int = 0  # rows that joined from a cached voice prefix
    prefix_tokens_saved: int = 0  # ... the prompt positions they did not prefill
    prefix_stored: int = 0  # voice prefixes taken into the cache
    rows_per_step: list[int] = field(default_factory=lambda: [0] * len(ROW_BUCKETS))
    rows_sum: int = 0


class FrameScheduler:
    """Continuous batching on one model instance (`loaded`, owned by `worker`).

    `prefill_tokens`: new prompt positions prefilled per iteration, for as many waiting rows as fit
    (rows x the longest one's new positions, as the left-padded forward computes them; the first row
    always joins). `prefill_rows`: most rows per iteration (None: as many as are free).
    `prefix_cache`: voice prefixes kept (0: none), `primed_cache`: primed decoder states kept."""

    def __init__(self, worker: StepWorker, loaded: Any, *, max_batch: int = 8, first_chunk_frames: int = 2,
                 chunk_frames: int = 8, prefill_rows: int | None = None, prefill_tokens: int = 512,
                 cuda_graphs: bool = True, context: int = 2048, blocked_gemm: bool = True, primed_cache: int = 16,
                 prefix_cache: int = 16):
        self.worker, self.loaded = worker, loaded
        self.max_batch = max(1, int(max_batch))
        self.first_chunk_frames, self.chunk_frames = first_chunk_frames, chunk_frames
        self.prefill_rows = max(1, int(prefill_rows or self.max_batch))
        self.prefill_tokens = max(1, int(prefill_tokens))
        self.want_graphs, self.context = cuda_graphs, context
        self.want_blocked, self.blocked_linears = blocked_gemm, 0
        self.stats = SchedulerStats()
        self.batch: Any = None
        self.graphs: Any = None  # CudaGraphs once captured
        self.running: list[_Row] = []  # index = slot
        self._joining: list[_Row] = []  # taken from _waiting for this iteration's prefill
        self._waiting: list[tuple[int, int, _Row | StreamJob]] = []  # heap of (priority, seq, item)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._driving = False
        self._tasks: set[asyncio.Future] = set()
        self._primed = LRU(primed_cache)
        self.prefixes = LRU(prefix_cache)  # prefix key -> PrefixKV

    @property
    def prefix_bytes(self) -> int:
        """Memory the cached voice prefixes hold."""
        return sum(p.nbytes for p in list(self.prefixes.values()))

    # -- event loop side -----------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: StreamJob) -> AsyncIterator[np.ndarray]:
        """Queue `job`; iterate the result for its audio. Closing the iterator takes it out of the batch."""
        job.loop = asyncio.get_running_loop()
        job.seq = next(self._seq)
        with self._lock:
            heapq.heappush(self._waiting, (int(job.priority), job.seq, job))
            start = not self._driving
            self._driving = True
        if start:
            task = asyncio.ensure_future(self._drive_on_worker())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._consume(job)

    async def _consume(self, job: StreamJob) -> AsyncIterator[np.ndarray]:
        try:
            async for item in queue_items(job.queue, _END):
                yield item
        finally:
            job.gone = True  # read by the worker before its next step

    async def _drive_on_worker(self) -> None:
        stream = self.worker.stream(self._iterations, priority=Priority.INTERACTIVE, request_id="qwen-batch")
        try:
            async for _ in stream:
                pass
        except BaseException as e:  # noqa: BLE001 - every job hears about a broken loop
            error = e if isinstance(e, SpeechError) else EngineFailure(f"the frame loop stopped: {e!r}")
            with self._lock:
                jobs = [r.job for r in (*self.running, *self._joining)]
                jobs += [self._job(item) for _, _, item in self._waiting]
                self.running, self._waiting, self._driving = [], [], False
                self._joining.clear()
                if self.batch is not None:
                    self.batch.count = 0
            for job in jobs:
                job.put(error)
            if not isinstance(e, Exception):
                raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    @staticmethod
    def _job(item: _Row | StreamJob) -> StreamJob:
        return item.job if isinstance(item, _Row) else item

    # -- worker side ---------------------------------------------------------------------------
    def _iterations(self) -> Iterator[None]:
        while True:
            with self._lock:
                if not self.running and not self._waiting:
                    self._driving = False
                    return
            self._iterate()
            yield None

    def _iterate(self) -> None:
        t0 = time.perf_counter()
        self._reap()
        batch = self._ensure_batch()
        if self.running:
            batch.talker_step(len(self.running), self._runner("talker"))
        if self._admit():  # rows wait for a voice prefix that join stored: they join from it now
            self._admit()
        n = len(self.running)
        if n == 0:
            return
        for slot, row in enumerate(self.running):
            batch.draw_noise(slot, row.generator, row.params.do_sample, row.params.subtalker_dosample)
        codes = batch.sample_and_predict(n, self._runner("sample")).to("cpu", copy=True)
        self._count_step(n)
        ended, due = [], []
        for slot, row in enumerate(self.running):
            token = int(codes[slot, 0])
            if token == batch.eos:
                ended.append(slot)
                continue
            row.pending.append(codes[slot])
            row.frames += 1
            if row.frames >= row.max_frames:
                ended.append(slot)
            elif len(row.pending) >= row.due:
                due.append(row)
        t1 = time.perf_counter()
        self._deliver(due + [self.running[slot] for slot in ended])
        self.stats.codec_seconds += time.perf_counter() - t1
        for slot in sorted(ended, reverse=True):
            row = self.running[slot]
            self._leave(slot)
            self._next_sentence(row)
        self.stats.decode_seconds += time.perf_counter() - t0

    def _runner(self, step: str) -> Callable | None:
        if self.graphs is None:
            return None
        return self.graphs.runner(step)

    def _count_step(self, n: int) -> None:
        stats = self.stats
        stats.decode_steps += 1
        stats.rows_sum += n
        if self.graphs is not None:  # its buckets go up to max_batch: every step replays
            stats.graph_replays += 1
        else:
            stats.eager_steps += 1
        for i, edge in enumerate(ROW_BUCKETS):
            if n <= edge:
                stats.rows_per_step[i] += 1
                break

    def _ensure_batch(self) -> Any:
        if self.batch is None:
            cuda = str(self.loaded.device).startswith("cuda")
            # CUDA: fixed buffers (graphs replay on their addresses); CPU: grow with the longest row.
            self.batch = FrameBatch(self.loaded, self.max_batch, context=self.context if cuda else 256,
                                    text=512 if cuda else 64, grow=not cuda, static=cuda and self.want_graphs)
            if not cuda and self.want_blocked:
                from .cpu_gemm import block_linears

                self.blocked_linears = block_linears(self.batch.talker)  # the code predictor is inside
            if cuda and self.want_graphs:
                from .cuda_graphs import CudaGraphs

                try:
                    self.graphs = CudaGraphs(self.batch)
                except Exception:  # noqa: BLE001 - eager steps still work; say why once
                    log.exception("CUDA graph capture failed; the Qwen frame loop runs eagerly")
                    self.graphs = None
        return self.batch

    def warm_up(self) -> dict[str, Any]:
        """Build the batch (and capture CUDA graphs) now; call on the worker thread."""
        self._ensure_batch()
        return self.graph_report()

    def graph_report(self) -> dict[str, Any]:
        if self.graphs is None:
            return {"cuda_graphs": False, "blocked_linears": self.blocked_linears}
        return {"cuda_graphs": True, "buckets": list(self.graphs.buckets),
                "capture_seconds": round(self.graphs.capture_seconds, 3)}

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            keep = []
            for entry in self._waiting:
                job = self._job(entry[2])
                if job.gone:
                    self.stats.cancelled += 1
                    job.put(_END)
                elif job.deadline is not None and now > job.deadline:
                    self.stats.deadline_exceeded += 1
                    job.put(DeadlineExceeded("synthesis passed its deadline while waiting for the model"))
                else:
                    keep.append(entry)
            if len(keep) < len(self._waiting):  # a heap again only when something left it
                heapq.heapify(keep)
                self._waiting = keep
        for slot in range(len(self.running) - 1, -1, -1):
            job = self.running[slot].job
            if job.gone:
                self.stats.cancelled += 1
            elif job.deadline is not None and now > job.deadline:
                self.stats.deadline_exceeded += 1
                job.put(DeadlineExceeded(f"synthesis passed its deadline after {self.running[slot].frames} frames"))
            else:
                continue
            self._leave(slot)

    def _leave(self, slot: int) -> None:
        moved = self.batch.leave(slot)
        if moved is not None:
            self.running[slot] = self.running[moved]
        self.running.pop()

    def _admit(self) -> bool:
        """Prefill waiting rows into free slots (step 3 above); True when rows were held back for a voice
        prefix this join computes, which a second call joins from before the frame step."""
        free = min(self.max_batch - len(self.running), self.prefill_rows)
        # Off the queue, not yet running: if the loop breaks before they run, _drive_on_worker tells them.
        rows, joins, widest = self._joining, [], 0
        storing: set[bytes] = set()  # voice prefixes this join will cache
        later: list[tuple[int, int, _Row]] = []  # rows back to the queue, in their place, prepared once
        for_prefix = False
        try:
            while len(rows) < free:
                with self._lock:
                    if not self._waiting:
                        break
                    priority, seq, item = heapq.heappop(self._waiting)
                row = item if isinstance(item, _Row) else self._first_row(item)
                rows.append(row)
                try:
                    join = self._join_of(row, len(self.running) + len(joins))
                except Exception as e:  # noqa: BLE001 - one bad request must not stop the batch
                    rows.pop()
                    self._fail(row, e)
                    continue
                prepared = row.prepared[0]
                if join.prefix is None and prepared.prefix_key in storing and _shares_most(prepared):
                    rows.pop()
                    later.append((priority, seq, row))
                    for_prefix = True
                    continue
                # The forward computes every row as wide as the widest: that is what the budget counts.
                widest = max(widest, join.new_tokens)
                if joins and (len(joins) + 1) * widest > self.prefill_tokens:
                    rows.pop()
                    later.append((priority, seq, row))
                    break
                joins.append(join)
                if self._stores_prefix(join, prepared):
                    storing.add(prepared.prefix_key)
        finally:
            if later:
                with self._lock:
                    for entry in later:
                        heapq.heappush(self._waiting, entry)
        if joins:
            self._prefill(rows, joins)
        rows.clear()
        return for_prefix  # held back for a prefix that a row of `joins` stores: joins is not empty

    def _prefill(self, rows: list[_Row], joins: list[Join]) -> None:
        t0 = time.perf_counter()
        try:  # the joining rows' prompts in one prefill
            self.batch.join_many(joins)
        except Exception as e:  # noqa: BLE001
            for row in rows:
                self._fail(row, e)
            return
        stats = self.stats
        stats.prefills += 1
        stats.prefill_seconds += time.perf_counter() - t0
        for row, join in zip(rows, joins, strict=True):
            prepared, settings = row.prepared
            row.prepared = None
            stats.prefill_tokens += join.new_tokens
            if join.prefix is not None:
                stats.prefix_hits += 1
                stats.prefix_tokens_saved += join.prefix.length
            elif self._stores_prefix(join, prepared):
                self.prefixes.put(prepared.prefix_key, self.batch.prefix(join.slot, prepared.prefix_len))
                stats.prefix_stored += 1
            self.running.append(row)
            row.max_frames, row.frames, row.pending, row.due = settings.max_frames, 0, [], self.first_chunk_frames
            row.decoder = StreamingCodecDecoder(self.loaded)
            row.ref = prepared.ref_code

    def _stores_prefix(self, join: Join, prepared: PreparedInput) -> bool:
        """Whether this join leaves the row's voice prefix in the cache: it has one, not taken from the cache."""
        return join.prefix is None and bool(prepared.prefix_len) and bool(self.prefixes.size)

    def _join_of(self, row: _Row, slot: int) -> Join:
        """The row's next sentence as a `Join` into `slot`, from its voice's cached prefix when there is one."""
        if row.prepared is None:
            row.prepared = self._prepare(row)
        prepared, settings = row.prepared
        prefix = self.prefixes.get(prepared.prefix_key) if prepared.prefix_len else None  # the key covers the length
        return Join(slot, prepared.prefill, prepared.trailing_text, settings, prefix)

    def _fail(self, row: _Row, error: Exception) -> None:
        self.stats.failed += 1
        if not isinstance(error, SpeechError):
            log.error("request %s: could not start a sentence: %r", row.job.request_id, error)
            error = EngineFailure(f"synthesis failed: {type(error).__name__}: {error}")
        row.job.put(error)

    def _first_row(self, job: StreamJob) -> _Row | None:
        self.stats.started += 1
        seed = job.seed if job.seed is not None else random.randrange(2**62)
        generator = torch.Generator(device=self.loaded.device).manual_seed(int(seed))
        return _Row(job=job, sentence=0, generator=generator, params=job.params[0], max_frames=0)

    def _prepare(self, row: _Row) -> tuple[Any, Any]:
        """The row's next sentence: its talker inputs and its settings (frames capped by a fixed cache)."""
        prepared = row.job.prepare(row.sentence)
        params = row.params = row.job.params[row.sentence]
        batch = self.batch
        if not batch.fits(prepared.prefill.shape[1], prepared.trailing_text.shape[1]):
            raise InvalidRequest(f"a sentence of {len(prepared.text)} characters is too long for this server's "
                                 f"Qwen context ({batch.context} positions, --qwen-max-context)", param="input")
        room = None if batch.grow else batch.context - prepared.prefill.shape[1] - 1
        return prepared, row_settings(params, room)

    def _deliver(self, rows: list[_Row]) -> None:
        """Decode the rows' pending frames (rows with the same count in one batch) and hand out the audio."""
        groups: dict[int, list[_Row]] = {}
        for row in rows:
            if row.pending:
                if row.ref is not None:
                    self._prime(row)
                groups.setdefault(len(row.pending), []).append(row)
        for group in groups.values():
            audio = decode_together([r.decoder for r in group], [torch.stack(r.pending) for r in group])
            for row, samples in zip(group, audio, strict=True):
                # Chunks double up to chunk_frames: each is made while the audio already sent plays.
                row.due = min(self.chunk_frames, 2 * len(row.pending))
                row.pending = []
                if samples.size:
                    row.job.put(samples)

    def _prime(self, row: _Row) -> None:
        # The decoder state after the reference codes depends on the model and the voice only.
        key = row.ref.cpu().numpy().tobytes()
        state = self._primed.get(key)
        if state is None:
            self.stats.primed += 1
            row.decoder.prime(row.ref)
            self._primed.put(key, row.decoder.save_state())
        else:
            self.stats.primed_reused += 1
            row.decoder.load_state(state)
        row.ref = None

    def _next_sentence(self, row: _Row) -> None:
        tail = row.decoder.flush()
        if tail.size:
            row.job.put(tail)
        if row.job.marks:
            row.job.put(SentenceDone(row.sentence))
        row.sentence += 1
        if row.sentence >= row.job.sentences or row.job.gone:
            self.stats.finished += 1
            row.job.put(_END)
            return
        with self._lock:  # back at the front: the job keeps its original place
            heapq.heappush(self._waiting, (int(row.job.priority), row.job.seq, row))


def _shares_most(prepared: PreparedInput) -> bool:
    """Whether most of the prompt is its voice's prefix. Then a row whose voice's prefix another row of
    this join is computing is held back and, right after that prefill, prefills only its tail from the
    cache: four requests of a new voice arriving together cost one prompt's prefill and three tails,
    not four prompts. When the text is most of the prompt, a second forward would save little, so
    such rows join whole, together."""
    return 2 * prepared.prefix_len >= prepared.prefill.shape[1]


__all__ = ["FrameScheduler", "ROW_BUCKETS", "SchedulerStats", "SentenceDone", "StreamJob"]
