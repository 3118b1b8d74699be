"""TaskThreads: sync calls in threads, answered on the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kadence.threads import TaskThreads


async def test_values_and_exceptions_come_back_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    with TaskThreads(4) as threads:
        ran_in: list[int] = []

        def value(i: int) -> int:
            ran_in.append(threading.get_ident())
            return i * 2

        def boom() -> None:
            raise KeyError("nope")

        results = await asyncio.gather(*(threads.submit(lambda i=i: value(i)) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert loop_thread not in ran_in
        assert len(set(ran_in)) <= 4  # never more threads than the size
        with pytest.raises(KeyError, match="nope"):
            await threads.submit(boom)
        assert threads.outstanding == 0


async def test_a_cancelled_future_keeps_counting_until_its_call_returns() -> None:
    release = threading.Event()
    with TaskThreads(1) as threads:
        future = threads.submit(release.wait)
        future.cancel()
        assert threads.outstanding == 1
        release.set()
        for _ in range(200):  # bounded: the thread returns at once
            if threads.outstanding == 0:
                break
            await asyncio.sleep(0.01)
        assert threads.outstanding == 0
        assert await threads.submit(lambda: "next") == "next"


async def test_shutdown_cancels_calls_not_started() -> None:
    release, started = threading.Event(), threading.Event()
    threads = TaskThreads(1)

    def first() -> bool:
        started.set()
        return release.wait()

    running = threads.submit(first)
    assert await asyncio.to_thread(started.wait, 5)
    queued = threads.submit(lambda: "never")
    threads.shutdown()
    assert queued.cancelled()
    release.set()
    assert await asyncio.wait_for(running, 5) is True
    with pytest.raises(RuntimeError, match="shut down"):
        threads.submit(lambda: None)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        TaskThreads(0)
