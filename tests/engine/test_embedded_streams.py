"""The embedded engine serves many streams at once: each stream's next sentence is made by when its audio
would run out, so a new request's first sentence goes ahead of other streams' later ones; admission
counts streams (32 per instance unless --max-concurrent says otherwise) and refuses beyond them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.base import AudioChunk, Priority, SynthesisRequest
from engine.embedded import STREAMS_PER_INSTANCE, VOICE, EmbeddedEngine
from engine.errors import Overloaded
from engine.service import SpeechParams, SpeechService

LONG = " ".join(f"Sentence number {i} of a long answer keeps this stream going." for i in range(20))


async def test_a_new_request_is_heard_before_the_running_streams_say_more(engine: EmbeddedEngine) -> None:
    """Eight long streams read as fast as they come: a new request's first sentence is the next one made,
    not one made after each of theirs."""
    worker = engine.workers[0]
    heard = [asyncio.Event() for _ in range(8)]

    async def reader(i: int) -> None:
        async for _ in engine.synthesize(SynthesisRequest(text=LONG, voice=VOICE, seed=i)):
            heard[i].set()

    readers = [asyncio.ensure_future(reader(i)) for i in range(8)]
    try:
        await asyncio.wait_for(asyncio.gather(*(h.wait() for h in heard)), 30)
        await asyncio.sleep(0.05)  # they are all well ahead of their listeners now
        before = worker.stats.steps
        stream = engine.synthesize(SynthesisRequest(text="Hello there.", voice=VOICE, seed=9))
        await anext(stream)
        # The step under way when it arrived, then its own: the worker waits for this first chunk to be
        # taken before stepping on (first-item handoff), so the count is read before any other step.
        assert worker.stats.steps - before <= 2
        await stream.aclose()
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    assert worker.stats.underruns == 0


async def test_admission_counts_the_engines_streams_and_refuses_beyond() -> None:
    """Without --max-concurrent the embedded engine takes 32 streams; the next is a 429 with Retry-After.
    An explicit limit still wins, and bulk never takes the last slot."""
    service = SpeechService([EmbeddedEngine()], max_concurrent=None, max_queue=0)
    await service.start()
    streams = []
    try:
        assert service.admission["embedded"].max_active == STREAMS_PER_INSTANCE
        streams = list(await asyncio.gather(*(service.open(SpeechParams(text=LONG, voice="alloy"))
                                              for _ in range(STREAMS_PER_INSTANCE))))
        with pytest.raises(Overloaded) as refused:
            await service.open(SpeechParams(text="One more.", voice="alloy"))
        assert refused.value.retry_after >= 1
    finally:
        for stream in streams:
            await stream.aclose()
        await service.close()
    explicit = SpeechService([EmbeddedEngine()], max_concurrent=2, max_queue=0)
    assert explicit.admission["embedded"].max_active == 2
    queue = explicit.admission["embedded"]
    bulk = await queue.acquire(Priority.BULK)
    with pytest.raises(Overloaded):
        await queue.acquire(Priority.BULK)  # the last slot is kept for interactive work
    interactive = await queue.acquire(Priority.INTERACTIVE)
    bulk.release()
    interactive.release()


async def test_threads_sharing_one_model_say_what_one_thread_says(engine: EmbeddedEngine) -> None:
    """Three synthesis threads on one loaded model (one ONNX session, one G2P) give every request the same
    samples as a single thread does, with all of them in flight at once; admission grows with the threads."""
    texts = [f"Request {i} says: {'the quick brown fox jumps over the lazy dog. ' * (1 + i % 3)}" for i in range(9)]

    async def audio(e: EmbeddedEngine, i: int) -> np.ndarray:
        chunks = [c.samples async for c in e.synthesize(SynthesisRequest(text=texts[i], voice=VOICE, seed=i))
                  if isinstance(c, AudioChunk)]
        return np.concatenate(chunks)

    alone = [await audio(engine, i) for i in range(len(texts))]
    shared = EmbeddedEngine(instances=3)
    await shared.start()
    try:
        assert shared.stream_slots == 3 * STREAMS_PER_INSTANCE and shared.workers[0].threads == 3
        together = await asyncio.gather(*(audio(shared, i) for i in range(len(texts))))
    finally:
        await shared.close()
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert np.array_equal(a, b), i
