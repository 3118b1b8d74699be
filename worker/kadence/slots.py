"""Fetch slots: a counting semaphore that hands out several permits at once, fairly.

A worker holds at most as many messages as it can run: its fetch loops take permits for the
free slots before fetching, and a finished run gives its slot back (:class:`Slots`). The
:class:`~kadence.consumer.QueueConsumer` of :meth:`KadenceClient.consume
<kadence.client.KadenceClient.consume>` bounds its fetched-but-untaken messages the same way.
"""

from __future__ import annotations

import asyncio
import collections


class Slots:
    """A counting semaphore that hands out several permits at once, first come first served.

    Fetch loops take as many permits as there are free slots (at least one) and fetch that many
    messages, so a worker never holds more messages than it can run. A released permit goes to
    the longest waiter first, so one partition cannot starve the others.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.free = capacity
        self.closed = False
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    async def take(self, most: int = 1) -> int:
        """Wait for at least one permit; take up to ``most``. 0 once closed."""
        if self.closed:
            return 0
        if self.free > 0 and not self.waiting:
            got = min(most, self.free)
            self.free -= got
            return got
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            got = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() > 0:
                self.give(future.result())  # handed a permit just as we were cancelled
            raise
        if got == 0:
            return 0
        extra = max(0, min(most - got, self.free))
        self.free -= extra
        return got + extra

    def give(self, count: int = 1) -> None:
        self.free += count
        while self.free > 0 and self._waiters:
            future = self._waiters.popleft()
            if future.done():
                continue
            self.free -= 1
            future.set_result(1)

    def close(self) -> None:
        """Wake every waiter with 0 permits; later ``take`` calls return 0."""
        self.closed = True
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(0)
