"""StepWorker: the first-item handoff (the next step waits for the consumer to be done with the first item)
and the bound on items made ahead of a consumer that stops taking them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from engine.worker import StepWorker, WorkerStats


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


# -- earliest due first: streams that say how long their items play ----------------------------------
def _playing(name: str, seconds: float, items: int, log: list[str], pause: float = 0.0) -> Iterator[tuple]:
    import time

    for i in range(1, items + 1):
        time.sleep(pause)
        log.append(f"{name}{i}")
        yield (name, seconds)


def _seconds(item: tuple) -> float:
    return item[1]


async def _run_held(streams: list[tuple[str, float, int]], priorities: dict[str, int] | None = None
                    ) -> tuple[list[str], WorkerStats]:
    """Submit the streams (name, seconds per item, items) in order to a held worker, then read all:
    the order their items were made in, and the worker's stats."""
    import threading

    worker = StepWorker("pace")
    log: list[str] = []
    try:
        hold = threading.Event()
        held = worker.call(hold.wait)
        readers = []
        for name, seconds, count in streams:
            items = worker.stream(lambda n=name, s=seconds, c=count: _playing(n, s, c, log), pace=_seconds,
                                  priority=(priorities or {}).get(name, 0))
            readers.append(asyncio.ensure_future(_read_all(items)))
            await asyncio.sleep(0.01)
        hold.set()
        await held
        await asyncio.gather(*readers)
    finally:
        await asyncio.to_thread(worker.close)
    return log, worker.stats


async def _read_all(items) -> None:  # noqa: ANN001 - a worker stream
    async for _ in items:
        pass


async def test_first_items_go_ahead_and_then_whoever_runs_out_first() -> None:
    """Every first item before anyone's second; then by when each stream's audio runs out (a's items
    play 10 s, b's 25 s, c's 40 s), not by turns."""
    log, stats = await _run_held([("a", 10.0, 3), ("b", 25.0, 2), ("c", 40.0, 2)])
    assert log == ["a1", "b1", "c1", "a2", "a3", "b2", "c2"]
    assert stats.underruns == 0


async def test_a_newcomer_goes_ahead_of_streams_whose_audio_lasts() -> None:
    """c arrives while a makes its second item: its first item comes before b's second and a's third (their
    audio lasts), where taking turns would have put it behind b."""
    import threading

    worker = StepWorker("pace")
    log: list[str] = []
    loop = asyncio.get_running_loop()
    readers: list[asyncio.Future] = []

    def arrive() -> None:
        readers.append(asyncio.ensure_future(_read_all(worker.stream(lambda: _playing("c", 10.0, 1, log),
                                                                     pace=_seconds))))

    submitted = threading.Event()

    def a_steps() -> Iterator[tuple]:
        for i in (1, 2, 3):
            if i == 2:  # on the worker thread, mid-step: c is submitted now
                loop.call_soon_threadsafe(lambda: (arrive(), submitted.set()))
                submitted.wait(10)
            log.append(f"a{i}")
            yield ("a", 10.0)

    try:
        hold = threading.Event()
        held = worker.call(hold.wait)
        readers.append(asyncio.ensure_future(_read_all(worker.stream(a_steps, pace=_seconds))))
        readers.append(asyncio.ensure_future(_read_all(worker.stream(lambda: _playing("b", 30.0, 2, log),
                                                                     pace=_seconds))))
        await asyncio.sleep(0.01)
        hold.set()
        await held
        while len(readers) < 3:
            await asyncio.sleep(0.01)
        await asyncio.gather(*readers)
    finally:
        await asyncio.to_thread(worker.close)
    assert log == ["a1", "b1", "a2", "c1", "a3", "b2"]


async def test_a_stream_about_to_run_out_goes_ahead_of_newcomers() -> None:
    """a's items play 10 ms: it is due again at once and is not starved by the streams queued after it."""
    log, _ = await _run_held([("a", 0.01, 3), ("b", 10.0, 1), ("c", 10.0, 1)])
    assert log == ["a1", "a2", "a3", "b1", "c1"]


async def test_bulk_stays_behind_interactive_whatever_is_due() -> None:
    """Priority first: a bulk stream queued first and about to run out still waits for interactive ones."""
    log, _ = await _run_held([("bulk", 0.01, 2), ("a", 10.0, 2), ("b", 10.0, 1)], {"bulk": 10})
    assert log == ["a1", "b1", "a2", "bulk1", "bulk2"]


async def test_audio_made_after_the_previous_ran_out_is_counted() -> None:
    worker = StepWorker("late")
    log: list[str] = []
    try:
        items = worker.stream(lambda: _playing("late", 0.01, 3, log, pause=0.05), pace=_seconds)
        await _read_all(items)
    finally:
        await asyncio.to_thread(worker.close)
    assert worker.stats.underruns == 2 and 0.06 < worker.stats.underrun_seconds < 1.0


def _held_step(name: str, started: list[str], release: threading.Event, steps: int) -> Iterator[str]:
    for i in range(steps):
        started.append(f"{name}{i}")
        release.wait(10)
        yield f"{name}{i}"


async def test_threads_step_different_streams_at_once_and_one_stream_in_order() -> None:
    """Two threads: while one step of `a` is held, `b` steps on the other thread; a stream's own steps never
    overlap (its next step starts only after the last one returned) and the counters add up."""
    worker = StepWorker("threads", threads=2)
    release = threading.Event()
    started: list[str] = []
    try:
        a = worker.stream(lambda: _held_step("a", started, release, 3))
        b = worker.stream(lambda: _held_step("b", started, release, 3))
        for _ in range(200):  # both held at once: two threads are stepping
            if len(started) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(started) == ["a0", "b0"]
        await asyncio.sleep(0.1)
        assert len(started) == 2  # neither stream was stepped again while its step was held
        release.set()
        assert [x async for x in a] == ["a0", "a1", "a2"]
        assert [x async for x in b] == ["b0", "b1", "b2"]
    finally:
        release.set()
        await asyncio.to_thread(worker.close)
    assert worker.stats.steps == 6 and worker.stats.finished == 2 and worker.stats.started == 2


async def test_closing_a_threaded_worker_fails_what_is_left() -> None:
    """Every thread leaves on close, and a stream that was still queued gets an error, not a hang."""
    worker = StepWorker("closing", threads=3)
    release = threading.Event()
    started: list[str] = []
    held = [worker.stream(lambda i=i: _held_step(f"s{i}", started, release, 2)) for i in range(3)]
    waiting = worker.stream(lambda: iter(["never"]))
    for _ in range(200):
        if len(started) == 3:
            break
        await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(asyncio.to_thread(worker.close))
    await asyncio.sleep(0.05)
    release.set()
    await closing
    outcomes = []
    for items in (*held, waiting):
        try:
            outcomes.append([x async for x in items])
        except Exception as e:  # noqa: BLE001 - the error is what is checked
            outcomes.append(type(e).__name__)
    assert outcomes == ["EngineFailure"] * 4  # the held ones after their step, the queued one unstarted
    assert not any(t.is_alive() for t in worker._threads)
