"""When a slot is dispatched: spread and jitter, two deterministic delays after the slot.

Neither moves a slot (its run id, its bounds, catch-up and backfill are unchanged); they only
delay publishing the run: ``dispatch_time = slot + spread_offset + jitter_delay``. Both are
derived with SHA-256 from the Job key (and the slot), never from ``random`` or Python's salted
``hash()``, so every replica and every restart computes the same delays.

Spread (``spread: hash``)
    A stable fraction ``f`` in ``[0, 1)`` is the first 64 bits of
    ``sha256("kadence/spread/v1" NUL job_uid)`` over ``2**64``. The offset is ``f * span``
    truncated to whole milliseconds, the same for every slot of the Job, where ``span`` is

    * the interval, for interval schedules: an offset in ``[0, interval)``;
    * one minute for five-field cron, one second for six-field cron (seconds first).

    The brief's cron rule "in ``[0, min(gap to the next slot, cap))``" reduces to these caps: two
    distinct cron slots are at least one minute (one second with a seconds field) apart, so the
    cap is never larger than the gap and an offset never reaches the next slot. Larger spreads for
    cron (e.g. across an hour) belong in the expression itself.

Jitter
    A delay in ``[0, jitter)`` (microseconds) from ``sha256("kadence/jitter/v1" NUL job_uid NUL
    slot)``: different for every slot, identical on every replica.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kadence_operator.scheduling._hashing import hash64, instant_key, require_aware
from kadence_operator.scheduling.schedule import Schedule, Spread

__all__ = [
    "CRON_SECONDS_SPREAD_SPAN",
    "CRON_SPREAD_SPAN",
    "dispatch_delay",
    "dispatch_time",
    "jitter_delay",
    "spread_offset",
    "spread_span",
]

#: The spread span of five-field cron schedules (their resolution).
CRON_SPREAD_SPAN = timedelta(minutes=1)
#: The spread span of six-field cron schedules (seconds first).
CRON_SECONDS_SPREAD_SPAN = timedelta(seconds=1)

_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND_US = 1000


def _fraction_of(h: int, span: timedelta) -> int:
    """``floor(h / 2**64 * span)`` in microseconds, for a 64-bit ``h``: in ``[0, span)``."""
    return (h * (span // _MICROSECOND)) >> 64


def spread_span(schedule: Schedule) -> timedelta:
    """The span the spread offset falls into: the interval, or 1 min / 1 s for cron."""
    if schedule.interval is not None:
        return schedule.interval
    return CRON_SECONDS_SPREAD_SPAN if schedule.cron_has_seconds else CRON_SPREAD_SPAN


def spread_offset(schedule: Schedule, *, job_uid: str) -> timedelta:
    """The Job's constant spread offset: whole milliseconds in ``[0, spread_span)``.

    Zero with ``spread: none``. Same ``job_uid`` and span, same offset, in every process.
    """
    if schedule.spread is Spread.NONE:
        return timedelta(0)
    micros = _fraction_of(hash64("kadence/spread/v1", job_uid), spread_span(schedule))
    return timedelta(milliseconds=micros // _MILLISECOND_US)


def jitter_delay(schedule: Schedule, *, job_uid: str, slot: datetime) -> timedelta:
    """The slot's deterministic jitter: microseconds in ``[0, schedule.jitter)``; zero if unset."""
    if schedule.jitter == timedelta(0):
        return timedelta(0)
    h = hash64("kadence/jitter/v1", job_uid, instant_key(slot))
    return timedelta(microseconds=_fraction_of(h, schedule.jitter))


def dispatch_delay(schedule: Schedule, *, job_uid: str, slot: datetime) -> timedelta:
    """Spread offset plus jitter of ``slot``: how long after the slot its run is published."""
    return spread_offset(schedule, job_uid=job_uid) + jitter_delay(
        schedule, job_uid=job_uid, slot=slot
    )


def dispatch_time(schedule: Schedule, *, job_uid: str, slot: datetime) -> datetime:
    """When the run of ``slot`` is published: ``slot + dispatch_delay`` (aware UTC)."""
    utc = require_aware("slot", slot)
    return utc + dispatch_delay(schedule, job_uid=job_uid, slot=utc)
