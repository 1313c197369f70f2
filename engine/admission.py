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

    def __init__(self, queue: AdmissionQueue):
        self._queue = queue
        self._t0 = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._release(time.monotonic() - self._t0)

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class AdmissionQueue:
    """At most `max_active` holders; at most `max_queued` waiting, best priority first, FIFO within one."""

    def __init__(self, max_active: int, max_queued: int, queue_timeout: float = 30.0):
        if max_active < 1 or max_queued < 0:
            raise ValueError("max_active must be >= 1 and max_queued >= 0")
        self.max_active = max_active
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.active = 0
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

    async def acquire(self, priority: Priority = Priority.INTERACTIVE) -> Slot:
        if self.active < self.max_active and not self.queued:
            self.active += 1
            return Slot(self)
        if self.queued >= self.max_queued:
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
                self._release(None)
            else:
                waiter.future.cancel()
            if isinstance(e, asyncio.TimeoutError):
                self.rejected += 1
                raise Overloaded(
                    f"server busy: waited {self.queue_timeout:.0f}s in the queue", retry_after=self.retry_after()
                ) from None
            raise
        return Slot(self)

    def _release(self, held: float | None) -> None:
        if held is not None:
            self._mean_hold = 0.8 * self._mean_hold + 0.2 * held
        while self._waiters:
            w = heapq.heappop(self._waiters)
            if not w.future.done():
                w.future.set_result(None)  # the slot passes straight to the waiter
                return
        self.active -= 1
