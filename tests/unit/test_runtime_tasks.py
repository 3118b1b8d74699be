"""An operator whose background loop dies stops, instead of running on without it (#29)."""

from __future__ import annotations

import asyncio

import pytest

from kadence_operator.runtime import _ended


async def _fails() -> None:
    raise RuntimeError("boom")


async def _returns() -> None:
    return None


async def _waits(stop: asyncio.Event) -> None:
    await stop.wait()


@pytest.mark.parametrize("coro", [_fails, _returns], ids=["raised", "returned"])
async def test_a_loop_that_ends_early_stops_the_operator(
    coro: object, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    calls: list[str] = []
    task = asyncio.create_task(coro(), name="results consumer")  # type: ignore[operator]
    await asyncio.wait([task])
    _ended(stop, lambda: calls.append("terminate"), task)
    assert calls == ["terminate"]
    assert "the results consumer stopped unexpectedly" in caplog.text


async def test_loops_that_end_on_stop_or_are_cancelled_do_not() -> None:
    stop = asyncio.Event()
    calls: list[str] = []
    waiting = asyncio.create_task(_waits(stop))
    cancelled = asyncio.create_task(_waits(asyncio.Event()))
    cancelled.cancel()
    stop.set()
    await asyncio.wait([waiting, cancelled])
    for task in (waiting, cancelled):
        _ended(stop, lambda: calls.append("terminate"), task)
    stop.clear()
    _ended(stop, lambda: calls.append("terminate"), cancelled)
    assert calls == []
