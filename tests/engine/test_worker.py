"""StepWorker: the first-item handoff (the next step waits for the consumer to be done with the first item)
and the bound on items made ahead of a consumer that stops taking them."""

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


def _counting_steps(made: list[int]) -> Iterator[int]:
    for i in range(100):
        made.append(i)
        yield i


async def test_a_consumer_that_stops_taking_items_stops_its_stream() -> None:
    worker = StepWorker("ahead", max_ahead=3)
    made: list[int] = []
    try:
        items = worker.stream(lambda: _counting_steps(made))
        assert await anext(items) == 0
        await asyncio.sleep(0.3)  # a worker without the bound would make all 100 now
        assert len(made) == 4  # the one taken and 3 ahead of the consumer
        other = worker.stream(lambda: iter(["other"]))  # the worker is free for everyone else meanwhile
        assert await asyncio.wait_for(anext(other), 10) == "other"
        await other.aclose()
        assert [await anext(items) for _ in range(5)] == [1, 2, 3, 4, 5]  # taking resumes it
        await asyncio.sleep(0.3)
        assert len(made) == 9
        await items.aclose()  # a parked stream that is closed is finished: nothing left active
        assert await asyncio.to_thread(lambda: _wait_until(lambda: worker.load == 0))
    finally:
        await asyncio.to_thread(worker.close)


def _wait_until(check, seconds: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not check():
        time.sleep(0.01)
    return check()
