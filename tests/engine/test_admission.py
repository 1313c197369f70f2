"""AdmissionQueue: limits, bounded queue, priorities, timeouts and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from engine.admission import AdmissionQueue
from engine.base import Priority
from engine.errors import Overloaded


async def test_limit_and_queue_bound():
    q = AdmissionQueue(max_active=2, max_queued=1, queue_timeout=5)
    a, b = await q.acquire(), await q.acquire()
    assert q.active == 2
    waiting = asyncio.create_task(q.acquire())
    await asyncio.sleep(0)
    assert q.queued == 1
    with pytest.raises(Overloaded) as info:
        await q.acquire()
    assert info.value.retry_after >= 1 and q.rejected == 1
    a.release()
    c = await asyncio.wait_for(waiting, 1)
    assert q.active == 2 and q.queued == 0
    a.release()  # releasing twice is harmless
    assert q.active == 2
    b.release()
    c.release()
    assert q.active == 0


async def test_interactive_overtakes_bulk():
    q = AdmissionQueue(max_active=1, max_queued=10, queue_timeout=5)
    held = await q.acquire()
    order: list[str] = []

    async def wait(name: str, priority: Priority) -> None:
        slot = await q.acquire(priority)
        order.append(name)
        await asyncio.sleep(0)
        slot.release()

    tasks = [asyncio.create_task(wait("bulk1", Priority.BULK)), asyncio.create_task(wait("bulk2", Priority.BULK))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("interactive", Priority.INTERACTIVE)))
    await asyncio.sleep(0)
    held.release()
    await asyncio.gather(*tasks)
    assert order == ["interactive", "bulk1", "bulk2"]
    assert q.active == 0


async def test_queue_timeout_and_cancel_free_the_place():
    q = AdmissionQueue(max_active=1, max_queued=1, queue_timeout=0.05)
    held = await q.acquire()
    with pytest.raises(Overloaded):
        await q.acquire()
    assert q.queued == 0
    q.queue_timeout = 5
    waiter = asyncio.create_task(q.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert q.active == 0 and q.queued == 0


async def test_bulk_never_takes_the_last_slot():
    q = AdmissionQueue(max_active=3, max_queued=10, queue_timeout=5)
    assert q.bulk_limit == 2
    b1, b2 = await q.acquire(Priority.BULK), await q.acquire(Priority.BULK)
    b3 = asyncio.create_task(q.acquire(Priority.BULK))
    await asyncio.sleep(0)
    assert not b3.done() and q.active == 2  # a slot is free, but not for bulk
    interactive = await asyncio.wait_for(q.acquire(Priority.INTERACTIVE), 1)  # starts at once
    assert q.active == 3
    interactive.release()
    await asyncio.sleep(0)
    assert not b3.done()  # the freed slot is the reserved one
    b1.release()
    slot3 = await asyncio.wait_for(b3, 1)
    assert q.active == 2 and q.active_bulk == 2
    for s in (b2, slot3):
        s.release()
    assert q.active == 0 and q.active_bulk == 0 and q.queued == 0


async def test_single_slot_still_serves_bulk():
    q = AdmissionQueue(max_active=1, max_queued=2)
    assert q.bulk_limit == 1
    (await q.acquire(Priority.BULK)).release()
    assert q.active == 0


async def test_interactive_displaces_queued_bulk_when_full():
    q = AdmissionQueue(max_active=1, max_queued=2, queue_timeout=5)
    held = await q.acquire(Priority.BULK)
    first = asyncio.create_task(q.acquire(Priority.BULK))
    newest = asyncio.create_task(q.acquire(Priority.BULK))
    await asyncio.sleep(0)
    assert q.queued == 2
    person = asyncio.create_task(q.acquire(Priority.INTERACTIVE))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):  # the newest bulk waiter gave way; it may retry later
        await newest
    assert q.queued == 2 and not first.done()
    with pytest.raises(Overloaded):  # bulk never displaces anyone, nor does an interactive request displace its peers
        await q.acquire(Priority.BULK)
    held.release()
    slot = await asyncio.wait_for(person, 1)
    slot.release()
    (await asyncio.wait_for(first, 1)).release()
    assert q.active == 0 and q.queued == 0
