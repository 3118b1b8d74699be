"""What one fire of a Job does, decided without doing it (pure).

:func:`decide` takes the scheduler's view of a Job (:class:`~kadence_operator.jobs.entry.Entry`),
its Queue's view and the time, and returns the fire as a list of effects, in the order the
executor (:mod:`kadence_operator.jobs.scheduler`) carries them out: runs to publish, a cancel
(``Replace``), counters for the metrics, status mutations (all from
:mod:`kadence_operator.results.fold`), changes to the Job's view, when to look again, and the next
on-time run to prepare. If an effect fails (a publish times out), the ones after it do not
happen and the Job is looked at again a little later: an effect list is what the fire used to
do inline between its awaits, in the same order.

The decision simulates the effects on the Job's view as it goes (a published run is active at
once, a cancel ends the active runs), so a catch-up of several slots decides each with what the
earlier ones changed. It reads ``entry`` and never changes it.

This is a purely computational module with no side-effects: no asyncio, NATS or Kubernetes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from kadence_operator import scheduling, timefmt
from kadence_operator.api import MAX_BACKFILL_SLOTS
from kadence_operator.jobs.entry import Entry, backfill_marker, backfill_pending
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.results import fold

Mutation = Callable[[fold.Status], fold.Status]
#: How long to wait before looking at a Job whose Queue is missing or not ready again.
QUEUE_RETRY = timedelta(seconds=10)
#: Jobs whose next slot is further away than this drop their request template between fires.
KEEP_TEMPLATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish one run (``Nats-Msg-Id = run_id``); once JetStream acked it, record it."""

    run_id: str
    slot: datetime
    #: ``Schedule``, ``CatchUp``, ``Backfill`` or ``Manual``.
    trigger: str
    #: When an on-time scheduled run was due (its lag to the ack is a metric).
    due: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """``Replace``: ask the workers to cancel the Job's active runs; they stop counting."""


@dataclass(frozen=True, slots=True)
class Post:
    """A status mutation for the coalesced status writer (``supersede``: replaces the pending
    mutation with the same tag)."""

    mutation: Mutation
    supersede: str | None = None


@dataclass(frozen=True, slots=True)
class Count:
    """Slots not run, by reason (``missed``, ``skipped``, ``buffered``), for the metrics."""

    reason: str
    amount: int = 1


@dataclass(frozen=True, slots=True)
class Warn:
    """A Warning Event on the Job for cluster operators."""

    reason: str
    message: str


Field = Literal[
    "last_slot",
    "last_trigger",
    "buffered",
    "dispatched_once",
    "backfill_done",
    "queue_problem",
    "ready_written",
]


@dataclass(frozen=True, slots=True)
class Update:
    """A change to the scheduler's view of the Job."""

    field: Field
    value: Any


@dataclass(frozen=True, slots=True)
class Wake:
    """Look at the Job again at ``at``."""

    at: datetime


@dataclass(frozen=True, slots=True)
class Arm:
    """Prepare the run of the next on-time slot (if the Job's request template is at hand)."""

    planned: scheduling.PlannedSlot
    run_id: str


@dataclass(frozen=True, slots=True)
class ForgetTemplate:
    """The next slot is far away: drop the Job's cached request template until then."""


Effect = Publish | Cancel | Post | Count | Warn | Update | Wake | Arm | ForgetTemplate


@dataclass(frozen=True, slots=True)
class Plan:
    #: In order; after one fails, the rest do not happen.
    effects: tuple[Effect, ...]
    #: Carried out after ``effects``, also when one of them failed.
    always: tuple[Effect, ...] = ()


class _View:
    """The part of the Job's view a fire changes, as the effects so far leave it."""

    def __init__(self, entry: Entry) -> None:
        self.active = entry.active_runs()
        self.buffered = entry.buffered
        self.last_slot = entry.last_slot
        self.backfill_pending = backfill_pending(entry)
        self.effects: list[Effect] = []

    def add(self, *effects: Effect) -> None:
        for effect in effects:
            self.effects.append(effect)
            if isinstance(effect, Publish):
                self.active.add(effect.run_id)
            elif isinstance(effect, Cancel):
                self.active = set()
            elif isinstance(effect, Update) and effect.field == "buffered":
                self.buffered = effect.value
            elif isinstance(effect, Update) and effect.field == "last_slot":
                self.last_slot = effect.value
            elif isinstance(effect, Update) and effect.field == "backfill_done":
                self.backfill_pending = False


def _missed_after(
    schedule: scheduling.Schedule,
    since: datetime,
    *,
    through: datetime,
    running: tuple[datetime, ...],
) -> int:
    """How many slots in ``(since, through]`` a catch-up decision counts missed: all but the
    late ones it runs (:func:`kadence_operator.results.fold.record_missed`)."""
    limit = scheduling.MISSED_COUNT_LIMIT if schedule.interval is None else None
    due = scheduling.count_fire_times(schedule, after=since, until=through, limit=limit)
    return max(0, due - sum(1 for slot in running if slot > since))


def decide(entry: Entry, queue: QueueInfo | None, now: datetime) -> Plan:
    """The fire of ``entry`` at ``now`` with its Queue as ``queue`` (None: not found)."""
    problem = None
    if queue is None:
        problem = f'spec.queue: Queue "{entry.queue_name}" not found in {entry.namespace}'
    elif not queue.ready:
        problem = f'spec.queue: Queue "{entry.queue_name}" is not Ready: {queue.reason}'
    if problem is not None:
        effects: list[Effect] = []
        if entry.queue_problem != problem:
            effects += [
                Update("queue_problem", problem),
                Post(
                    functools.partial(
                        fold.set_ready,
                        ok=False,
                        reason="QueueNotReady",
                        message=problem,
                        generation=entry.generation,
                        now=now,
                    )
                ),
                Warn("QueueNotReady", problem),
            ]
        return Plan((*effects, Wake(now + QUEUE_RETRY)))
    view = _View(entry)
    if entry.queue_problem is not None or not entry.ready_written:
        view.add(Update("queue_problem", None), Update("ready_written", True))
        _decide_ready(entry, view, now)
        # After the runs' records, so that a new Job's first status write has them all.
        ready = functools.partial(
            fold.set_ready,
            ok=True,
            reason="Valid",
            message="spec is valid and the queue is ready",
            generation=entry.generation,
            now=now,
        )
        return Plan(tuple(view.effects), always=(Post(ready),))
    _decide_ready(entry, view, now)
    return Plan(tuple(view.effects))


def _decide_ready(entry: Entry, view: _View, now: datetime) -> None:
    """The part of a fire once the Queue is known to be ready."""
    # Manual trigger: each new annotation value asks for one run, even while suspended.
    if entry.trigger and entry.trigger_pending():
        value = entry.trigger
        run_id = scheduling.run_id_for_trigger(entry.uid, value)
        view.add(
            Publish(run_id, now, "Manual"),
            Update("last_trigger", value),
            Post(functools.partial(fold.set_field, name="lastTrigger", value=value)),
        )

    schedule = entry.schedule
    if schedule is None:
        if not entry.dispatched_once:
            run_id = scheduling.run_id_for_trigger(entry.uid, "once")
            view.add(Publish(run_id, entry.created, "Schedule"), Update("dispatched_once", True))
        view.add(_next_run(entry, None, now))
        return

    _decide_backfill(entry, schedule, view, now)

    if entry.suspend:
        # Suspended: slots pass without running and without counting as missed; a buffered
        # slot is dropped (skipped).
        if view.buffered is not None:
            view.add(*_drop(view.buffered))
        previous = scheduling.previous_fire_time(schedule, at_or_before=now)
        if previous is not None and (view.last_slot is None or previous > view.last_slot):
            view.add(
                Update("last_slot", previous),
                Post(functools.partial(fold.record_passed, through=previous), supersede="passed"),
            )
        upcoming = scheduling.next_fire_time(schedule, after=now)
        view.add(_next_run(entry, upcoming, now))
        if upcoming is not None:
            view.add(Wake(upcoming))
        return

    # BufferOne: the pending slot runs once nothing is active any more.
    if view.buffered is not None and not view.active:
        slot = view.buffered
        view.add(
            Publish(scheduling.run_id_for_slot(entry.uid, slot), slot, "Schedule"),
            *_buffer(None),  # after the publish: a failed one leaves the slot held
        )

    # The newest slot is not planned before its dispatch time (spread, jitter): a Job looked
    # at early (a watch event) must not publish it ahead of time.
    plan_now = now
    newest = scheduling.previous_fire_time(schedule, at_or_before=now)
    deferred = None
    if (
        newest is not None
        and (view.last_slot is None or newest > view.last_slot)
        and scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=newest) > now
    ):
        plan_now = newest - timedelta(microseconds=1)
        deferred = newest
    catch_up = scheduling.plan_catch_up(
        schedule,
        job_uid=entry.uid,
        last_slot=view.last_slot,
        now=plan_now,
        policy=entry.catch_up,
        window=entry.window,
        grace=entry.grace,
    )
    if catch_up.missed:
        # The missed slots are among the late ones: (last slot, newest late slot].
        late_until = catch_up.last_slot
        if catch_up.on_time is not None:
            late_until = scheduling.previous_fire_time(
                schedule, at_or_before=catch_up.on_time - timedelta(microseconds=1)
            )
        assert late_until is not None  # there were late slots
        running = tuple(s for s in catch_up.to_run if s != catch_up.on_time)
        view.add(
            Post(
                functools.partial(
                    fold.record_missed,
                    missed=catch_up.missed,
                    after=view.last_slot,
                    through=late_until,
                    missed_after=functools.partial(
                        _missed_after, schedule, through=late_until, running=running
                    ),
                )
            ),
            Count("missed", catch_up.missed),
        )
    for slot in catch_up.to_run:
        decision = scheduling.decide_overlap(
            entry.policy, active=len(view.active), buffered=1 if view.buffered is not None else 0
        )
        if decision.drop_buffered and view.buffered is not None:
            view.add(*_drop(view.buffered))
        if decision.action is scheduling.OverlapAction.SKIP:
            # This slot (the dropped pending one is counted above).
            view.add(
                Post(functools.partial(fold.record_skipped, through=slot)),
                Count("skipped"),
            )
        if decision.action is scheduling.OverlapAction.SKIP:
            continue
        if decision.action is scheduling.OverlapAction.BUFFER:
            view.add(*_buffer(slot), Count("buffered"))
            continue
        if decision.action is scheduling.OverlapAction.REPLACE:
            view.add(Cancel())
        on_time = slot == catch_up.on_time
        view.add(
            Publish(
                scheduling.run_id_for_slot(entry.uid, slot),
                slot,
                "Schedule" if on_time else "CatchUp",
                scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=slot)
                if on_time
                else None,
            )
        )
    if catch_up.last_slot is not None:
        view.add(Update("last_slot", catch_up.last_slot))
    view.add(
        *plan_next(
            entry,
            schedule,
            now,
            last_slot=view.last_slot,
            plan_now=plan_now,
            deferred=deferred,
            arm=not view.backfill_pending,
        )
    )


def _decide_backfill(
    entry: Entry, schedule: scheduling.Schedule, view: _View, now: datetime
) -> None:
    backfill = entry.backfill
    if backfill is None or not view.backfill_pending:
        return
    # [from, to): the end is exclusive.
    slots = scheduling.backfill_slots(
        schedule,
        from_=backfill.from_,
        to=backfill.to - timedelta(microseconds=1),
        cap=MAX_BACKFILL_SLOTS,
    )
    for slot in slots:
        view.add(Publish(scheduling.run_id_for_slot(entry.uid, slot), slot, "Backfill"))
    done = {
        "from": timefmt.rfc3339(backfill.from_),
        "to": timefmt.rfc3339(backfill.to),
        "dispatched": len(slots),
        "completionTime": timefmt.rfc3339(now),
    }
    view.add(
        Update("backfill_done", backfill_marker(backfill)),
        Post(functools.partial(fold.set_field, name="backfill", value=done)),
    )


def plan_next(
    entry: Entry,
    schedule: scheduling.Schedule,
    now: datetime,
    *,
    last_slot: datetime | None,
    plan_now: datetime,
    deferred: datetime | None = None,
    arm: bool = True,
) -> list[Effect]:
    """After a fire: record the Job's next slot, look again when it is due, and prepare its run.

    Also what the armed path does once its run is acked (with ``plan_now = now``). ``arm``:
    whether the next run may be prepared (not while a backfill is still to be dispatched).
    """
    nxt: datetime | None
    if deferred is not None:
        nxt = deferred
    elif last_slot is not None:
        nxt = scheduling.next_fire_time(schedule, after=max(last_slot, plan_now))
    else:
        nxt = scheduling.next_fire_time(schedule, after=plan_now)
    effects: list[Effect] = [_next_run(entry, nxt, now)]
    if nxt is None or nxt - now > KEEP_TEMPLATE:
        # A Job that fires rarely rebuilds its request template (~65 µs) when it next fires
        # rather than keep it (and its JobRef) in memory all the while.
        effects.append(ForgetTemplate())
    if nxt is None:
        return effects
    planned = scheduling.plan_slot(
        schedule, job_uid=entry.uid, last_slot=last_slot, slot=nxt, grace=entry.grace
    )
    if planned is None:
        effects.append(Wake(scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=nxt)))
        return effects
    effects.append(Wake(planned.due))
    if arm:
        effects.append(Arm(planned, scheduling.run_id_for_slot(entry.uid, nxt)))
    return effects


def _buffer(slot: datetime | None) -> tuple[Effect, Effect]:
    """Hold ``slot`` back (BufferOne), or let go of the held one: in the view and in the status,
    where the next replica finds it."""
    return Update("buffered", slot), Post(functools.partial(fold.set_buffered, slot=slot))


def _drop(held: datetime) -> tuple[Effect, ...]:
    """Drop the held slot (BufferOne): it counts as skipped, once (see ``fold.drop_buffered``)."""
    return (
        Update("buffered", None),
        Post(functools.partial(fold.drop_buffered, slot=held)),
        Count("skipped"),
    )


def _next_run(entry: Entry, nxt: datetime | None, now: datetime) -> Post:
    return Post(
        functools.partial(
            fold.record_next_run,
            next_run=nxt,
            suspended=entry.suspend,
            generation=entry.generation,
            now=now,
        ),
        supersede="next-run",
    )
