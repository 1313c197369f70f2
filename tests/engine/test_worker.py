"""StepWorker's first-item handoff: the next step waits for the consumer to be done with the first item."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from engine.worker import StepWorker


def _recording_steps(log: list[str]) -> Iterator[str]:
    log.append("step 1")
    yield "first"
    log.append("step 2")
    yield "second"


async def test_the_next_step_waits_until_the_consumer_is_back() -> None:
    worker = StepWorker("handoff", first_item_handoff=30.0)  # a bound far beyond any scheduling delay
    log: list[str] = []  # appended by the worker thread and the loop (list.append is atomic)
    try:
        items = worker.stream(lambda: _recording_steps(log))
        assert await anext(items) == "first"
        await asyncio.sleep(0.05)  # room for a worker that does not wait to run step 2 now
        log.append("first item sent")
        assert await anext(items) == "second"
        assert log == ["step 1", "first item sent", "step 2"]
        await items.aclose()
    finally:
        await asyncio.to_thread(worker.close)


async def test_a_consumer_that_leaves_after_the_first_item_releases_the_worker() -> None:
    worker = StepWorker("handoff", first_item_handoff=30.0)
    try:
        first = worker.stream(lambda: iter(["a", "b"]))
        assert await anext(first) == "a"
        await first.aclose()
        # Had the worker stayed in the 30 s handoff of the closed stream, this would wait for it.
        second = worker.stream(lambda: iter(["c"]))
        assert await asyncio.wait_for(anext(second), 10) == "c"
        await second.aclose()
    finally:
        await asyncio.to_thread(worker.close)
