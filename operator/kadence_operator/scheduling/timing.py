"""Fire-time arithmetic: which slots a schedule has.

This is a purely computational module with no side-effects: no clock is read (``after`` and
``now`` are always passed in), nothing is random, and every result is a function of its
arguments, so every replica computes the same answer.

Vocabulary
    A *slot* (also: *fire time*) is an aware UTC datetime at which a run is due, computed from the
    schedule alone. It is the identity of a scheduled run: run ids, catch-up and backfill all speak
    in slots. Spread and jitter never move a slot; they only delay its dispatch (see
    :mod:`.dispatch`).

Interval anchoring
    Slots are ``anchor + k * interval`` for integers ``k``. The anchor is ``start_at`` when it is
    set, else :attr:`Schedule.anchor` (the operator passes the Job's creation time), else the Unix
    epoch ``1970-01-01T00:00:00Z`` (:data:`EPOCH`). Each is fixed for the Job's lifetime, so slots
    are stable across operator restarts and replicas; the epoch is also stable across delete and
    re-create (a one-day interval then fires at 00:00 UTC). The anchor only sets the phase: the
    bounds below decide which slots exist. Intervals are absolute durations and ignore
    ``time_zone``; DST never changes them.

Cron and time zones
    A cron expression is matched against wall-clock time in ``time_zone``; each matching wall
    time fires at most once.

    * Spring forward (a gap, e.g. Europe/Berlin 2026-03-29 02:00 -> 03:00): a matching wall time
      that does not exist fires at the first valid instant after the gap, i.e. the transition
      instant (03:00 CEST = 01:00Z), like Vixie cron does for fixed-time jobs. Several matches
      inside one gap (``*/15 2 * * *``) collapse into that one slot, and so does a match at the
      first wall time after the gap (03:00): one slot, not two.
    * Fall back (a repeat, e.g. Europe/Berlin 2026-10-25 03:00 -> 02:00): a wall time that occurs
      twice fires once, at its first occurrence (the earlier instant, still on summer time). The
      consequence is deliberate and uniform: a wildcard-hour expression such as ``0 * * * *``
      does not fire again at the repeated 02:00, leaving a two-hour real-time gap. Use an
      interval for strict real-time periodicity.

Bounds
    ``start_at`` and ``end_at`` are inclusive bounds on slots: none is earlier than ``start_at``
    and none later than ``end_at``. (A slot's dispatch may be delayed past ``end_at`` by spread
    and jitter.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo

from kadence_operator.scheduling._hashing import require_aware
from kadence_operator.scheduling.schedule import Schedule, cron_iterator

__all__ = [
    "DEFAULT_BACKFILL_CAP",
    "EPOCH",
    "backfill_slots",
    "count_fire_times",
    "fire_times_between",
    "interval_anchor",
    "latest_fire_times",
    "next_fire_time",
    "next_fire_times",
    "previous_fire_time",
]

#: The anchor of interval slots when the schedule has neither ``start_at`` nor ``anchor``.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The default maximum number of slots :func:`backfill_slots` returns.
DEFAULT_BACKFILL_CAP = 100

_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
# Iteration stops quietly at the ends of the datetime range or when croniter finds no more dates
# (CroniterBadDateError is a ValueError).
_END_OF_TIME = (OverflowError, ValueError)


# --- interval schedules -----------------------------------------------------------------------


def interval_anchor(schedule: Schedule) -> datetime:
    """The anchor of interval slots: ``start_at``, else ``anchor``, else :data:`EPOCH` (UTC)."""
    for candidate in (schedule.start_at, schedule.anchor):
        if candidate is not None:
            return candidate.astimezone(UTC)
    return EPOCH


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class _Grid:
    """Interval slots ``base + k * step`` for ``k_min <= k <= k_max`` (None: unbounded)."""

    base: datetime
    step: timedelta
    k_min: int | None
    k_max: int | None

    @classmethod
    def of(cls, schedule: Schedule) -> _Grid:
        assert schedule.interval is not None
        base = interval_anchor(schedule)
        step = schedule.interval
        start = _utc_or_none(schedule.start_at)
        end = _utc_or_none(schedule.end_at)
        # k_min: the first k with base + k*step >= start, i.e. ceil((start - base) / step).
        k_min = None if start is None else -((base - start) // step)
        k_max = None if end is None else (end - base) // step
        return cls(base=base, step=step, k_min=k_min, k_max=k_max)

    def first_after(self, t: datetime) -> int:
        k = (t - self.base) // self.step + 1
        return k if self.k_min is None else max(k, self.k_min)

    def last_at_or_before(self, t: datetime) -> int:
        k = (t - self.base) // self.step
        return k if self.k_max is None else min(k, self.k_max)

    def ascending(self, after: datetime) -> Iterator[datetime]:
        k = self.first_after(after)
        while self.k_max is None or k <= self.k_max:
            try:
                slot = self.base + k * self.step
            except _END_OF_TIME:
                return
            yield slot
            k += 1

    def descending(self, at_or_before: datetime) -> Iterator[datetime]:
        k = self.last_at_or_before(at_or_before)
        while self.k_min is None or k >= self.k_min:
            try:
                slot = self.base + k * self.step
            except _END_OF_TIME:
                return
            yield slot
            k -= 1

    def count(self, after: datetime, until: datetime) -> int:
        return max(0, self.last_at_or_before(until) - self.first_after(after) + 1)


# --- cron schedules: wall clock <-> instants --------------------------------------------------


def _utc(wall: datetime, offset: timedelta | None) -> datetime:
    assert offset is not None
    return (wall - offset).replace(tzinfo=UTC)


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _transition(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole-second instant in ``(lo, hi]`` whose UTC offset differs from ``lo``'s.

    Requires the offsets at ``lo`` and ``hi`` to differ (one transition in between); a binary
    search over seconds, ~13 steps for a one-hour range. tzdata transitions are whole seconds.
    """
    before = _offset_at(zone, lo)
    lo_s = (lo - EPOCH) // _SECOND
    hi_s = -((EPOCH - hi) // _SECOND)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset_at(zone, EPOCH + mid * _SECOND) == before:
            lo_s = mid
        else:
            hi_s = mid
    return EPOCH + hi_s * _SECOND


def _wall_to_instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """The instant at which naive wall time ``wall`` in ``zone`` fires (see the module doc).

    Unambiguous: that instant. Repeated (fall back): the first occurrence. Non-existent (spring
    forward): the transition instant, the first valid instant after the gap. The map is
    monotone (non-decreasing) in ``wall``.
    """
    early = _utc(wall, wall.replace(tzinfo=zone, fold=0).utcoffset())
    late = _utc(wall, wall.replace(tzinfo=zone, fold=1).utcoffset())
    if early <= late:
        return early
    # In a gap PEP 495 maps fold=0 with the offset from before the transition (a later instant)
    # and fold=1 with the one from after it (an earlier instant): the transition is in between.
    return _transition(zone, late, early)


def _end_of_repeat(zone: ZoneInfo, t: datetime) -> datetime | None:
    """If ``t`` is the second occurrence of a repeated wall time, the naive wall time where the
    repeat ends (e.g. 03:00 for Berlin 2026-10-25); otherwise None.

    Every wall time before that one has already fired at its first occurrence, before ``t``.
    """
    local = t.astimezone(zone)
    if local.fold == 0:
        return None
    wall = local.replace(tzinfo=None)
    summer = wall.replace(tzinfo=zone, fold=0).utcoffset()
    first = _utc(wall, summer)
    if first >= t:
        return None
    assert summer is not None
    return (_transition(zone, first, t) + summer).replace(tzinfo=None)


def _cron_after(schedule: Schedule, t: datetime) -> Iterator[datetime]:
    """Ascending, distinct cron slots ``> t`` (no bounds)."""
    assert schedule.cron is not None
    zone = schedule.zone
    end_of_repeat = _end_of_repeat(zone, t)
    if end_of_repeat is not None:
        seed = end_of_repeat - _SECOND
    else:
        seed = t.astimezone(zone).replace(tzinfo=None)
    walls = cron_iterator(schedule.cron, seed)
    last = t
    while True:
        try:
            instant = _wall_to_instant(zone, walls.get_next(datetime))
        except _END_OF_TIME:
            return
        # The wall -> instant map is monotone; equal instants are collapsed gap matches.
        if instant > last:
            last = instant
            yield instant


def _cron_at_or_before(schedule: Schedule, t: datetime) -> Iterator[datetime]:
    """Descending, distinct cron slots ``<= t`` (no bounds)."""
    assert schedule.cron is not None
    zone = schedule.zone
    end_of_repeat = _end_of_repeat(zone, t)
    if end_of_repeat is not None:
        seed = end_of_repeat
    else:
        seed = t.astimezone(zone).replace(tzinfo=None) + _MICROSECOND
    walls = cron_iterator(schedule.cron, seed)
    last: datetime | None = None
    while True:
        try:
            instant = _wall_to_instant(zone, walls.get_prev(datetime))
        except _END_OF_TIME:
            return
        if instant <= t and (last is None or instant < last):
            last = instant
            yield instant


# --- both kinds, with bounds ------------------------------------------------------------------


def _ascending(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """All slots ``> after`` within the bounds, ascending (lazy, possibly infinite)."""
    if schedule.interval is not None:
        yield from _Grid.of(schedule).ascending(after)
        return
    start = _utc_or_none(schedule.start_at)
    if start is not None:
        after = max(after, start - _MICROSECOND)
    end = _utc_or_none(schedule.end_at)
    for slot in _cron_after(schedule, after):
        if end is not None and slot > end:
            return
        yield slot


def _descending(schedule: Schedule, at_or_before: datetime) -> Iterator[datetime]:
    """All slots ``<= at_or_before`` within the bounds, descending (lazy, possibly infinite)."""
    if schedule.interval is not None:
        yield from _Grid.of(schedule).descending(at_or_before)
        return
    end = _utc_or_none(schedule.end_at)
    if end is not None:
        at_or_before = min(at_or_before, end)
    start = _utc_or_none(schedule.start_at)
    for slot in _cron_at_or_before(schedule, at_or_before):
        if start is not None and slot < start:
            return
        yield slot


def _check_limit(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


# --- public API -------------------------------------------------------------------------------


def next_fire_times(schedule: Schedule, *, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` slots strictly after ``after``, ascending, as aware UTC datetimes.

    Fewer are returned when ``end_at`` (or the end of the calendar) comes first.
    """
    _check_limit("count", count)
    return list(islice(_ascending(schedule, require_aware("after", after)), count))


def next_fire_time(schedule: Schedule, *, after: datetime) -> datetime | None:
    """The first slot strictly after ``after``, or None if the schedule has ended."""
    found = next_fire_times(schedule, after=after, count=1)
    return found[0] if found else None


def previous_fire_time(schedule: Schedule, *, at_or_before: datetime) -> datetime | None:
    """The latest slot at or before ``at_or_before``, or None if there is none."""
    return next(_descending(schedule, require_aware("at_or_before", at_or_before)), None)


def fire_times_between(
    schedule: Schedule, *, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The earliest ``limit`` slots in ``(after, until]``, ascending."""
    _check_limit("limit", limit)
    lo = require_aware("after", after)
    hi = require_aware("until", until)
    return list(islice(takewhile(lambda s: s <= hi, _ascending(schedule, lo)), limit))


def latest_fire_times(
    schedule: Schedule, *, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The latest ``limit`` slots in ``(after, until]``, ascending.

    Walks backwards from ``until``: the cost is ``O(limit)``, however long the range.
    """
    _check_limit("limit", limit)
    lo = require_aware("after", after)
    hi = require_aware("until", until)
    newest_first = islice(takewhile(lambda s: s > lo, _descending(schedule, hi)), limit)
    return sorted(newest_first)


def count_fire_times(
    schedule: Schedule, *, after: datetime, until: datetime, limit: int | None = None
) -> int:
    """How many slots lie in ``(after, until]``, saturating at ``limit`` (None: no limit).

    Interval schedules are counted arithmetically (``O(1)``, exact for any range). Cron
    schedules are iterated, so pass a ``limit`` for ranges that may hold many slots: the result
    is then ``min(true count, limit)``.
    """
    if limit is not None:
        _check_limit("limit", limit)
    lo = require_aware("after", after)
    hi = require_aware("until", until)
    if hi <= lo:
        return 0
    if schedule.interval is not None:
        exact = _Grid.of(schedule).count(lo, hi)
        return exact if limit is None else min(exact, limit)
    slots = takewhile(lambda s: s <= hi, _ascending(schedule, lo))
    return sum(1 for _ in (slots if limit is None else islice(slots, limit)))


def backfill_slots(
    schedule: Schedule, *, from_: datetime, to: datetime, cap: int = DEFAULT_BACKFILL_CAP
) -> list[datetime]:
    """The schedule's slots in ``[from_, to]`` (both inclusive), the earliest ``cap`` of them.

    These are ordinary slots (bounds apply), so a backfilled run gets the same run id as the
    scheduled run of that slot and dedupes against it. When exactly ``cap`` slots come back
    there may be more: continue with ``from_`` just after the last one. For a half-open range
    ``[from, to)`` pass ``to - timedelta(microseconds=1)``.
    """
    _check_limit("cap", cap)
    lo = require_aware("from_", from_)
    return fire_times_between(schedule, after=lo - _MICROSECOND, until=to, limit=cap)
