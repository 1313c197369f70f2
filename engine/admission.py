"""Admission control: a limit on concurrent syntheses and a bounded, prioritised wait queue.

Beyond the queue a request is refused with `Overloaded` carrying a Retry-After estimate, so clients
back off instead of piling up. Slots are per utterance, never per connection.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field

from .base import Priority
from .errors import Overloaded


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future = field(compare=False)


class Slot:
    """A held admission slot; release it exactly once (idempotent)."""

    def __init__(self, queue: AdmissionQueue, bulk: bool = False):
        self._queue = queue
        self.bulk = bulk
        self._t0 = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._release(self.bulk, time.monotonic() - self._t0)

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class AdmissionQueue:
    """At most `max_active` holders; at most `max_queued` waiting, best priority first, FIFO within one.

    Bulk work never holds the last `reserved_interactive` slots (one, when there is more than one), so
    an interactive request arriving during a batch starts at once instead of waiting for a bulk
    utterance to end; and a full queue makes room for an interactive request by refusing its newest
    bulk waiter, so queued bulk work never turns an interactive request away.
    """

    def __init__(self, max_active: int, max_queued: int, queue_timeout: float = 30.0,
                 reserved_interactive: int | None = None):
        if max_active < 1 or max_queued < 0:
            raise ValueError("max_active must be >= 1 and max_queued >= 0")
        self.max_active = max_active
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        reserved = (1 if max_active > 1 else 0) if reserved_interactive is None else reserved_interactive
        self.bulk_limit = max(1, max_active - reserved)
        self.active = 0
        self.active_bulk = 0
        self.rejected = 0
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._mean_hold = 2.0  # seconds; a prior until real holds are measured

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the expected time for the queue ahead to drain."""
        ahead = self.queued + 1
        return max(1, min(120, math.ceil(self._mean_hold * ahead / self.max_active)))

    def _can_run(self, priority: int) -> bool:
        if self.active >= self.max_active:
            return False
        return priority < Priority.BULK or self.active_bulk < self.bulk_limit

    def _take(self, priority: int) -> None:
        self.active += 1
        if priority >= Priority.BULK:
            self.active_bulk += 1

    async def acquire(self, priority: Priority = Priority.INTERACTIVE) -> Slot:
        bulk = priority >= Priority.BULK
        ahead = any(w.priority <= priority for w in self._waiters if not w.future.done())
        if self._can_run(priority) and not ahead:
            self._take(priority)
            return Slot(self, bulk)
        if self.queued >= self.max_queued and not self._displace_for(priority):
            self.rejected += 1
            raise Overloaded(
                f"server busy: {self.active} syntheses running and {self.queued} queued",
                retry_after=self.retry_after(),
            )
        waiter = _Waiter(int(priority), next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.queue_timeout)
        except (TimeoutError, asyncio.CancelledError) as e:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted at the same moment we gave up: hand the slot on.
                self._release(bulk, None)
            else:
                waiter.future.cancel()
                self._drop_done()
            if isinstance(e, asyncio.TimeoutError):
                self.rejected += 1
                raise Overloaded(
                    f"server busy: waited {self.queue_timeout:.0f}s in the queue", retry_after=self.retry_after()
                ) from None
            raise
        return Slot(self, bulk)

    def _displace_for(self, priority: int) -> bool:
        """Make room for a better request by refusing the newest waiter of the worst queued priority.

        Bulk work is patient (a batch item refused here waits and retries) while a person is waiting on
        an interactive request, so a queue full of bulk waiters must not turn the person away.
        """
        waiting = [w for w in self._waiters if not w.future.done() and w.priority > priority]
        if not waiting:
            return False
        victim = max(waiting, key=lambda w: (w.priority, w.seq))
        victim.future.set_exception(Overloaded("server busy: a queued bulk request gave way to an interactive one",
                                               retry_after=self.retry_after()))
        self._drop_done()
        return True

    def _drop_done(self) -> None:
        self._waiters = [w for w in self._waiters if not w.future.done()]
        heapq.heapify(self._waiters)

    def _release(self, bulk: bool, held: float | None) -> None:
        if held is not None:
            self._mean_hold = 0.8 * self._mean_hold + 0.2 * held
        self.active -= 1
        if bulk:
            self.active_bulk -= 1
        # Grant slots to the best waiters that may run now; a bulk waiter blocked by the bulk limit
        # does not hold up an interactive one behind it.
        for w in sorted(self._waiters):
            if w.future.done() or not self._can_run(w.priority):
                continue
            self._take(w.priority)
            w.future.set_result(None)
        self._drop_done()
