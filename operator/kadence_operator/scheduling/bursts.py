"""When background work should step aside for a burst of fires (pure).

Many Jobs often share their slots: every cron Job at ``:00``, every ``interval: 1m`` Job created
in the same second. When such a burst comes, the operator's event loop and the machine's CPUs
should be publishing runs, not applying status mutations, folding results or making the API
server process a status PATCH. :class:`BurstWatch` counts the fires due per 10 ms and tells
background work (the status writer, the results consumer) how long to wait: when at least
``burst`` fires are due within the next ``quiet`` seconds, until the first of them is due plus
``settle`` seconds (for the burst's publishes to leave).

A hold never starves the background work: once one ends, no other starts for ``quiet`` seconds,
so at most about half of the time is held even when bursts follow each other closely. Status
writes are coalesced anyway (one per Job per status interval); holding them moves them by a
fraction of a second and delays no run.
"""

from __future__ import annotations

import collections
import math

#: Width of the buckets fires are counted in, seconds.
BUCKET = 0.01
#: Seconds a hold lasts past the first fire of its burst: time for the burst to go out.
SETTLE = 0.04


#: Bounds of how long before a staged group of fires is due the scheduler starts preparing it.
STAGE_LEAD_MIN = 0.005
STAGE_LEAD_MAX = 0.25
#: Margin on the measured cost per fire when deciding the lead. The cost is a recent average,
#: and single passes take several times as long when the machine is busy: in the 1,000-Job
#: benchmark (docs/performance.md) passes took 16 ms at the median and up to 103 ms, and with a
#: margin of 3 about one in fifty ran past the instant and made its whole burst late.
STAGE_MARGIN = 8.0


def stage_lead(count: int, cost: float) -> float:
    """Seconds before ``count`` fires due together the scheduler starts preparing them, when
    preparing one has lately cost ``cost`` seconds: the measured time with a margin, bounded."""
    return min(STAGE_LEAD_MAX, STAGE_LEAD_MIN + STAGE_MARGIN * cost * max(0, count))


def _bucket(at: float) -> int:
    return math.floor(at / BUCKET)


class BurstWatch:
    """Counts fires due per bucket and decides holds. Times: ``due``/``now`` are epoch seconds,
    ``mono`` a monotonic clock (holds are measured on it, so a wall-clock step cannot make
    one last long)."""

    def __init__(self, *, quiet: float, burst: int, settle: float = SETTLE) -> None:
        self.quiet = quiet
        self.burst = burst
        self.settle = settle
        self._due: collections.Counter[int] = collections.Counter()
        self._hold_until = -math.inf
        self._free_until = -math.inf
        #: Holds decided so far (a metric).
        self.holds = 0

    def add(self, due: float) -> None:
        """A fire is due at ``due``."""
        self._due[_bucket(due)] += 1

    def remove(self, due: float) -> None:
        """The fire due at ``due`` was taken off the schedule (fired, superseded or dropped)."""
        key = _bucket(due)
        left = self._due[key] - 1
        if left > 0:
            self._due[key] = left
        else:
            del self._due[key]

    def due_at(self, due: float) -> int:
        """Fires due in the bucket of ``due`` (the 10 ms around it)."""
        return self._due.get(_bucket(due), 0)

    def due_within(self, now: float, seconds: float, first: float) -> int:
        """Fires due from ``first`` (the earliest) to ``now + seconds``."""
        start, end = _bucket(min(first, now)), _bucket(now + seconds)
        if end - start > 1000:  # a far-behind schedule: everything due is late anyway
            return sum(n for key, n in self._due.items() if key <= end)
        return sum(self._due.get(key, 0) for key in range(start, end + 1))

    def hold(self, *, now: float, mono: float, first: float | None) -> float:
        """Seconds background work should wait now (0: go ahead).

        ``first`` is when the earliest pending fire is due (None: nothing scheduled).
        """
        if mono < self._hold_until:
            return self._hold_until - mono  # the hold in progress
        if self.quiet <= 0 or first is None or mono < self._free_until:
            return 0.0
        until = first - now
        if until > self.quiet or self.due_within(now, self.quiet, first) < self.burst:
            return 0.0
        wait = max(0.0, until) + self.settle
        self._hold_until = mono + wait
        self._free_until = self._hold_until + self.quiet
        self.holds += 1
        return wait

    def __len__(self) -> int:
        return sum(self._due.values())
