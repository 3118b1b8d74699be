"""The heartbeats of a worker's running attempts, on one timer.

An attempt's heartbeat (its in-progress ack every third of the ack wait, so JetStream does not
redeliver a long task) and its deferred ``Running`` report are entries of :class:`Beats`,
checked every :data:`BEAT_TICK` seconds while there are any. Most attempts end before either is
due, and adding an entry to a set and removing it costs a busy worker much less than the
event-loop timer per attempt it replaces (docs/performance.md, section (d)).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: How often :class:`Beats` looks for heartbeats and deferred reports that are due (seconds);
#: each fires up to this much late.
BEAT_TICK = 0.05


class Beats:
    """The heartbeats of all running attempts, on one timer (see the module)."""

    __slots__ = ("_entries", "_timer")

    def __init__(self) -> None:
        self._entries: set[Heartbeats] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, beat: Callable[[], None], interval: float) -> Heartbeats:
        """Call ``beat`` every ``interval`` seconds until the entry is cancelled."""
        loop = asyncio.get_running_loop()
        entry = Heartbeats(self, beat, interval, loop.time() + interval)
        self._entries.add(entry)
        if self._timer is None:
            self._timer = loop.call_later(BEAT_TICK, self._tick)
        return entry

    def _remove(self, entry: Heartbeats) -> None:
        self._entries.discard(entry)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for entry in list(self._entries):
            entry.fire_due(now)
        self._timer = loop.call_later(BEAT_TICK, self._tick) if self._entries else None


class Heartbeats:
    """One attempt's entry in :class:`Beats`: its heartbeat and an optional one-shot call
    (the deferred ``Running`` report), both ended by :meth:`cancel`."""

    __slots__ = ("_beat", "_due", "_interval", "_once", "_once_at", "_owner")

    def __init__(self, owner: Beats, beat: Callable[[], None], interval: float, due: float) -> None:
        self._owner = owner
        self._beat = beat
        self._interval = interval
        self._due = due
        self._once: Callable[[], None] | None = None
        self._once_at = 0.0

    def once(self, delay: float, call: Callable[[], None]) -> None:
        """Call ``call`` after ``delay`` seconds unless cancelled first."""
        self._once = call
        self._once_at = asyncio.get_running_loop().time() + delay

    def fire_due(self, now: float) -> None:
        if self._once is not None and now >= self._once_at:
            call, self._once = self._once, None
            call()
        if now >= self._due:
            self._due = now + self._interval
            self._beat()

    def cancel(self) -> None:
        self._once = None
        self._owner._remove(self)


__all__ = ["BEAT_TICK", "Beats", "Heartbeats"]
