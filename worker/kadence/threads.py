"""The threads that run sync task handlers, answering on the event loop.

A ``ThreadPoolExecutor`` plus ``asyncio.wrap_future`` costs a worker about 60 µs of CPU per run
(measured on the benchmark machine, see docs/performance.md section (d)): a ``concurrent.futures``
future with its condition and locks, a chained asyncio future, and one wake-up of the event loop
through its self-pipe for every single call. A worker running short tasks spends more on that
than on the tasks. :class:`TaskThreads` hands each call to a thread through a
``queue.SimpleQueue`` and answers with a plain asyncio future; threads that finish while the loop
is busy share one wake-up, and the loop then resolves all their futures in one go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class TaskThreads:
    """Up to ``size`` threads running calls submitted from one event loop.

    :meth:`submit` must be called on the event loop; the returned future is resolved there with
    the call's value or exception. A future cancelled by its waiter does not stop the call (a
    thread cannot be interrupted) but is resolved no more, and :meth:`outstanding` still counts
    the call until it returns. Threads start on demand and are daemons: a handler that never
    returns cannot keep the process from exiting after :meth:`shutdown`.
    """

    def __init__(self, size: int, *, name: str = "kadence-task") -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._finished: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self._finished = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._outstanding = 0
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Calls submitted and not yet returned (running or waiting for a thread)."""
        return self._outstanding

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` in a thread; the future resolves on the calling event loop."""
        if self._closed:
            raise RuntimeError("the task threads are shut down")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("TaskThreads serves one event loop")
        future: asyncio.Future[T] = loop.create_future()
        self._outstanding += 1
        if self._outstanding > len(self._threads) and len(self._threads) < self.size:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._jobs.put((fn, future))
        return future

    def _work(self) -> None:
        jobs, finished = self._jobs, self._finished
        while (job := jobs.get()) is not None:
            fn, future = job
            try:
                finished.append((future, fn(), None))
            except BaseException as error:  # handed to the awaiting coroutine
                finished.append((future, None, error))
            del job, fn, future
            # One wake-up for every call that ends before the loop gets to run _deliver: a call
            # appended before this check is delivered by the _deliver already scheduled, since
            # _deliver clears the flag before it drains.
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                if loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                        loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._wake_pending = False
        finished = self._finished
        while finished:
            future, value, error = finished.popleft()
            self._outstanding -= 1
            if future.done():  # cancelled by its waiter
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def shutdown(self) -> None:
        """Stop the threads once their current calls end; calls not started are cancelled."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    self._outstanding -= 1
                    job[1].cancel()
        for _ in self._threads:
            self._jobs.put(None)

    def __enter__(self) -> TaskThreads:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


__all__ = ["TaskThreads"]
