"""Decisions about due slots: catch-up after an outage and overlap with active runs.

This is a purely computational module with no side-effects: the caller passes in what it knows
(the last slot handled, the current time, how many runs are active or buffered) and gets back a
decision object; it persists state and talks to NATS and Kubernetes itself.

Catch-up (:func:`plan_catch_up`)
    The slots *due* at ``now`` are the slots in ``(last_slot, now]``. The most recent one is *on
    time* when ``now - dispatch_time(slot) <= grace`` (its spread and jitter delays included, and
    negative lateness -- called before the dispatch time -- is on time too); an on-time slot
    always runs, whatever the policy: this is the normal tick of a healthy scheduler, which is
    always a little late. Every other due slot is *late* (missed while the operator was down or
    lagging) and the catch-up policy decides:

    * ``None``: run none of them.
    * ``One``: run only the latest late slot -- unless an on-time slot runs, which already is the
      one run after the outage.
    * ``All``: run every late slot.

    ``window`` (optional, like ``CronJob.startingDeadlineSeconds``) makes late slots earlier than
    ``now - window`` ineligible for ``One`` and ``All``. At most ``cap`` (default 100, like
    ``CronJob``) slots run per decision: the most recent ones. Every late slot that does not run
    is counted in ``missed``. Counting is exact for interval schedules (arithmetic, ``O(1)``) and
    saturates at :data:`MISSED_COUNT_LIMIT` slots for cron schedules (``missed_saturated``).

Planned slots (:func:`plan_slot`, :func:`runs_alone`)
    A healthy Job's next slot is known a whole interval ahead: the caller prepares its run then,
    and when the slot is due, :func:`runs_alone` tells (in a few comparisons) whether
    :func:`plan_catch_up` would decide exactly that: run this slot, on time, nothing missed.

Overlap (:func:`decide_overlap`)
    What to do with a slot that fires while runs are active, per ``concurrencyPolicy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from kadence_operator.scheduling._hashing import require_aware
from kadence_operator.scheduling.dispatch import dispatch_time
from kadence_operator.scheduling.schedule import Schedule
from kadence_operator.scheduling.timing import (
    count_fire_times,
    latest_fire_times,
    next_fire_time,
    previous_fire_time,
)

__all__ = [
    "DEFAULT_GRACE",
    "MAX_CATCH_UP",
    "MISSED_COUNT_LIMIT",
    "CatchUpDecision",
    "CatchUpPolicy",
    "ConcurrencyPolicy",
    "OverlapAction",
    "OverlapDecision",
    "PlannedSlot",
    "decide_overlap",
    "plan_catch_up",
    "plan_slot",
    "runs_alone",
    "runs_alone_during",
]

#: The most slots one catch-up decision runs (``CronJob`` also stops at 100 missed schedules).
MAX_CATCH_UP = 100
#: How late the most recent due slot may be and still count as on time.
DEFAULT_GRACE = timedelta(seconds=60)
#: Cron schedules stop counting missed slots here (interval schedules count exactly).
MISSED_COUNT_LIMIT = 10_000

_MICROSECOND = timedelta(microseconds=1)


class CatchUpPolicy(StrEnum):
    """Which late (missed) slots run when the scheduler catches up."""

    #: Run no late slot; they are all counted as missed.
    NONE = "None"
    #: Run the most recent late slot (if no on-time slot runs); the others are missed.
    ONE = "One"
    #: Run every late slot inside the window, up to the cap; the rest are missed.
    ALL = "All"


@dataclass(frozen=True)
class CatchUpDecision:
    """The outcome of :func:`plan_catch_up`."""

    #: Slots to dispatch, ascending (each through :func:`decide_overlap`), late ones at once and
    #: an on-time one at ``max(now, dispatch_time(slot))``.
    to_run: list[datetime] = field(default_factory=list)
    #: Late slots that will not run. A lower bound when ``missed_saturated``.
    missed: int = 0
    #: True when a cron schedule had at least :data:`MISSED_COUNT_LIMIT` late slots, so
    #: ``missed`` stopped counting.
    missed_saturated: bool = False
    #: The newest due slot (run or missed), to store and pass as the next ``last_slot``; the
    #: ``last_slot`` passed in when nothing was due.
    last_slot: datetime | None = None
    #: The slot of ``to_run`` that is on time (a regular ``Schedule`` run), if any; every other
    #: slot of ``to_run`` is a late one (a ``CatchUp`` run).
    on_time: datetime | None = None


def plan_catch_up(
    schedule: Schedule,
    *,
    job_uid: str,
    last_slot: datetime | None,
    now: datetime,
    policy: CatchUpPolicy,
    window: timedelta | None = None,
    grace: timedelta = DEFAULT_GRACE,
    cap: int = MAX_CATCH_UP,
) -> CatchUpDecision:
    """Which due slots in ``(last_slot, now]`` to run, and how many were missed.

    ``last_slot`` is the newest slot already handled (run or missed). None means the Job has
    never been handled: nothing is late then, only a slot that is on time at ``now`` runs (pass
    the Job's creation time instead to catch up from creation). ``job_uid`` is the key of the
    spread and jitter delays (see ``dispatch``). See the module doc for the rules.
    """
    if cap < 0:
        raise ValueError(f"cap must not be negative, got {cap}")
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, got {grace}")
    if window is not None and window < timedelta(0):
        raise ValueError(f"window must not be negative, got {window}")
    policy = CatchUpPolicy(policy)
    now = require_aware("now", now)
    last = None if last_slot is None else require_aware("last_slot", last_slot)

    newest = previous_fire_time(schedule, at_or_before=now)
    if newest is None or (last is not None and newest <= last):
        return CatchUpDecision(last_slot=last_slot)
    lateness = now - dispatch_time(schedule, job_uid=job_uid, slot=newest)
    on_time = newest if lateness <= grace else None
    if last is None:
        if on_time is None:
            return CatchUpDecision(last_slot=None)
        if cap == 0:
            return CatchUpDecision(missed=1, last_slot=on_time)
        return CatchUpDecision(to_run=[on_time], last_slot=on_time, on_time=on_time)

    # Late slots are the due ones except the on-time one: (last, late_until].
    late_until = newest - _MICROSECOND if on_time is not None else newest
    is_cron = schedule.interval is None
    late = count_fire_times(
        schedule,
        after=last,
        until=late_until,
        limit=MISSED_COUNT_LIMIT if is_cron else None,
    )
    saturated = is_cron and late >= MISSED_COUNT_LIMIT
    eligible_after = last if window is None else max(last, now - window - _MICROSECOND)

    run_late: list[datetime] = []
    if late and policy is CatchUpPolicy.ONE and on_time is None:
        run_late = latest_fire_times(
            schedule, after=eligible_after, until=late_until, limit=min(1, cap)
        )
    elif late and policy is CatchUpPolicy.ALL:
        room = cap - (1 if on_time is not None else 0)
        run_late = latest_fire_times(
            schedule, after=eligible_after, until=late_until, limit=max(room, 0)
        )
    if on_time is not None and cap == 0:
        late += 1  # not even the on-time slot fits: it is missed too
        on_time = None
    to_run = run_late + ([on_time] if on_time is not None else [])
    return CatchUpDecision(
        to_run=to_run,
        missed=late - len(run_late),
        missed_saturated=saturated,
        last_slot=newest,
        on_time=on_time,
    )


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    """A slot planned ahead of its dispatch time (see :func:`plan_slot`)."""

    #: The slot.
    slot: datetime
    #: Its dispatch time (the slot plus its spread and jitter delays).
    due: datetime
    #: The slot before it: the newest slot handled when the plan holds.
    after: datetime
    #: The slot after it; None when the schedule ends with ``slot``.
    following: datetime | None
    #: How late it may be and still run on time (the catch-up grace).
    grace: timedelta = DEFAULT_GRACE


def plan_slot(
    schedule: Schedule,
    *,
    job_uid: str,
    last_slot: datetime | None,
    slot: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> PlannedSlot | None:
    """Plan ``slot`` ahead, for a Job whose newest handled slot is ``last_slot``.

    None when that cannot hold: ``last_slot`` is unknown, or slots lie between it and ``slot``
    (those are :func:`plan_catch_up`'s to decide).
    """
    if last_slot is None:
        return None
    before = previous_fire_time(schedule, at_or_before=slot - _MICROSECOND)
    if before is None or before != last_slot:
        return None
    return PlannedSlot(
        slot=slot,
        due=dispatch_time(schedule, job_uid=job_uid, slot=slot),
        after=last_slot,
        following=next_fire_time(schedule, after=slot),
        grace=grace,
    )


def runs_alone(planned: PlannedSlot, *, last_slot: datetime | None, now: datetime) -> bool:
    """Whether :func:`plan_catch_up` at ``now`` runs exactly ``planned.slot``, on time, and
    misses nothing -- whatever the catch-up policy and window.

    True when the newest handled slot is still the one the plan follows and ``now`` is within
    :func:`runs_alone_during`: the slot is due, not later than its ``grace``, and the slot after
    it has not come yet.
    """
    if last_slot != planned.after:
        return False
    start, end = runs_alone_during(planned)
    return start <= now < end


def runs_alone_during(planned: PlannedSlot) -> tuple[datetime, datetime]:
    """The instants ``[start, end)`` at which :func:`runs_alone` holds for ``planned`` while the
    newest handled slot stays ``planned.after``: from its dispatch time until it is later than
    its ``grace`` or the slot after it comes, whichever is first.

    So the check of many planned slots at one instant is one comparison with the latest start and
    the earliest end among them.
    """
    end = planned.due + planned.grace + _MICROSECOND
    if planned.following is not None and planned.following < end:
        end = planned.following
    return planned.due, end


class ConcurrencyPolicy(StrEnum):
    """What happens when a slot fires while runs of the same Job are active."""

    #: Runs may overlap: always dispatch.
    ALLOW = "Allow"
    #: Never overlap: a slot firing during an active run is skipped.
    FORBID = "Forbid"
    #: Keep at most one pending slot while a run is active; further slots merge into it.
    BUFFER_ONE = "BufferOne"
    #: Cancel the active run(s) and dispatch the new slot.
    REPLACE = "Replace"


class OverlapAction(StrEnum):
    """What to do with the slot that just fired."""

    #: Dispatch it now.
    DISPATCH = "Dispatch"
    #: Drop it; it is counted as skipped.
    SKIP = "Skip"
    #: Hold it as the one pending slot; dispatch it when the active runs have finished.
    BUFFER = "Buffer"
    #: Cancel the active runs (``cancel`` of them), then dispatch it.
    REPLACE = "Replace"


@dataclass(frozen=True)
class OverlapDecision:
    """The outcome of :func:`decide_overlap`."""

    #: What to do with the new slot.
    action: OverlapAction
    #: How many active runs to cancel (only with :attr:`OverlapAction.REPLACE`).
    cancel: int = 0
    #: How many buffered (pending) slots to discard.
    drop_buffered: int = 0
    #: How much to add to the Job's skipped-slot counter (the new slot and/or dropped ones).
    skipped: int = 0


def decide_overlap(policy: ConcurrencyPolicy, *, active: int, buffered: int) -> OverlapDecision:
    """The decision for one slot that fires while ``active`` runs are running and ``buffered``
    slots are pending.

    With nothing active and nothing buffered every policy dispatches. Otherwise:

    * ``Allow``: dispatch.
    * ``Forbid``: skip (skipped += 1) while anything is active.
    * ``Replace``: while anything is active, replace (cancel all ``active``, then dispatch).
    * ``BufferOne``: while anything is active, buffer the slot if nothing is pending yet, else
      skip it (merged into the pending one, skipped += 1). With nothing active, dispatch; a
      stale pending slot is superseded by this newer one (dropped, counted as skipped).

    Pending slots exist only under ``BufferOne``. With any other policy (after a policy change)
    leftover pending slots are dropped and counted as skipped. Promoting the pending slot when
    the active run finishes is the caller's job, not a slot firing.
    """
    if active < 0 or buffered < 0:
        raise ValueError(f"active and buffered must not be negative, got {active}, {buffered}")
    policy = ConcurrencyPolicy(policy)
    if policy is ConcurrencyPolicy.BUFFER_ONE:
        if active == 0:
            return OverlapDecision(OverlapAction.DISPATCH, drop_buffered=buffered, skipped=buffered)
        if buffered == 0:
            return OverlapDecision(OverlapAction.BUFFER)
        # Keep one pending slot; the new one and any extra pending ones merge into it.
        extra = buffered - 1
        return OverlapDecision(OverlapAction.SKIP, drop_buffered=extra, skipped=1 + extra)
    stale = buffered
    if active == 0 or policy is ConcurrencyPolicy.ALLOW:
        return OverlapDecision(OverlapAction.DISPATCH, drop_buffered=stale, skipped=stale)
    if policy is ConcurrencyPolicy.FORBID:
        return OverlapDecision(OverlapAction.SKIP, drop_buffered=stale, skipped=1 + stale)
    return OverlapDecision(OverlapAction.REPLACE, cancel=active, drop_buffered=stale, skipped=stale)
