"""The worker's heartbeat ticker: one timer for the heartbeats and deferred reports of all
attempts (``kadence.heartbeats.Beats``)."""

from __future__ import annotations

import asyncio
import itertools

from kadence.heartbeats import BEAT_TICK, Beats


async def test_beats_repeat_at_their_interval_and_stop_when_cancelled() -> None:
    beats = Beats()
    fast: list[float] = []
    slow: list[float] = []
    loop = asyncio.get_running_loop()
    a = beats.start(lambda: fast.append(loop.time()), 0.1)
    b = beats.start(lambda: slow.append(loop.time()), 10.0)
    started = loop.time()
    await asyncio.sleep(0.55)
    a.cancel()
    count = len(fast)
    # Every 0.1 s, each up to one tick late: 4 or 5 beats in 0.55 s, none before 0.1 s.
    assert 3 <= count <= 5, fast
    assert fast[0] - started >= 0.1
    assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(fast))
    await asyncio.sleep(0.3)
    assert len(fast) == count  # cancelled: no more
    assert slow == []  # not due yet
    b.cancel()
    await asyncio.sleep(2 * BEAT_TICK)
    assert beats._timer is None  # nothing left to watch: the timer is not re-armed


async def test_a_one_shot_call_fires_once_after_its_delay_unless_cancelled_first() -> None:
    beats = Beats()
    fired: list[str] = []
    kept = beats.start(lambda: None, 60.0)
    kept.once(0.1, lambda: fired.append("kept"))
    dropped = beats.start(lambda: None, 60.0)
    dropped.once(0.1, lambda: fired.append("dropped"))
    dropped.cancel()
    await asyncio.sleep(0.05)
    assert fired == []
    await asyncio.sleep(0.3)
    assert fired == ["kept"]  # once, and not for the cancelled entry
    kept.cancel()
