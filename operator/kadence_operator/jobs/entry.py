"""The scheduler's view of one Job, and its next on-time run prepared ahead (no I/O).

:class:`Entry` is what the scheduler knows of a valid Job between watch events: the spec fields
a fire needs, the runs it believes active, its last slot, its pending trigger. It is plain data
that the pure decision (:mod:`kadence_operator.jobs.plan`) reads and the executor
(:mod:`kadence_operator.jobs.scheduler`) updates with what a plan says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kadence.protocol import JobRef
from kadence_operator import scheduling, timefmt
from kadence_operator.api import Backfill, HistoryLimits, JobSpec, parse_duration
from kadence_operator.jobs.runs import QueueInfo, RequestTemplate

Key = tuple[str, str]
#: A run this replica published is counted as active until the status lists it (or ends it);
#: after this long without seeing it there (the write was lost), it is forgotten.
SENT_TTL = 120.0
#: A run known to have ended stays excluded while stale watch events still list it as active.
ENDED_TTL = 60.0


@dataclass(slots=True)
class Armed:
    """A Job's next on-time run, prepared a whole interval ahead.

    When a fire ends, the plan for the Job's next slot is made (:func:`scheduling.plan_slot`) and
    its run request encoded. When the slot is due and the Job still :func:`runs_alone` (nothing
    to catch up, no trigger, no pending slot, the spec, Queue and overlap decision unchanged),
    the scheduler only publishes these bytes: the version check. Anything else takes the full
    decision (:func:`kadence_operator.jobs.plan.decide`), which would publish the same run (a
    property test holds the two together).
    """

    planned: scheduling.PlannedSlot
    run_id: str
    subject: str
    payload: bytes
    #: ``Entry.version`` of the heap item the plan belongs to, the generation and Queue it used.
    version: int
    generation: int
    queue: QueueInfo


@dataclass(slots=True)
class Entry:
    """The scheduler's view of one valid Job.

    Which runs are active is the union of ``status.active`` (as last seen in a watch event) and
    the runs this replica published whose record is not in the status yet, minus the runs this
    replica knows have ended (a final result folded, or replaced) while the status still lists
    them: the status lags behind by up to one status interval.
    """

    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    #: The spec as compact JSON: parsed models cost kilobytes per Job, and a fire needs only what
    #: :meth:`derive` takes from it (the whole spec is parsed again only to rebuild the template).
    spec_json: bytes
    schedule: scheduling.Schedule | None
    shard: int
    last_slot: datetime | None = None
    trigger: str | None = None
    #: The last trigger value handled by this replica, and the one recorded in the status.
    last_trigger: str | None = None
    status_trigger: str | None = None
    dispatched_once: bool = False
    backfill_done: str | None = None
    status_active: frozenset[str] = frozenset()
    #: run id -> monotonic time of the publish, until the status knows the run.
    sent: dict[str, float] = field(default_factory=dict)
    #: run id -> monotonic time it was seen to end (or was replaced).
    ended: dict[str, float] = field(default_factory=dict)
    #: The one pending slot of concurrencyPolicy BufferOne.
    buffered: datetime | None = None
    #: ``status.bufferedSlot`` as last seen, unless the status also lists that slot's run.
    status_buffered: datetime | None = None
    #: Take over ``status_buffered`` at the next fire: this replica has just started firing the
    #: Job (a new entry, a gained shard), and the held slot is the previous holder's.
    adopt: bool = True
    version: int = 0
    queue_problem: str | None = None
    ready_written: bool = False
    firing: bool = False
    refire: bool = False
    #: Counts what reached the Job from outside its own fires and could stop a staged fire
    #: (watch events, removal; a run that ended only lets more fire): a staged fire whose
    #: Job's stamp has not moved since needs no second look at the instant.
    stamp: int = 0
    #: Derived from the spec (see :meth:`derive`) so that a fire parses nothing.
    queue_name: str = ""
    suspend: bool = False
    backfill: Backfill | None = None
    limits: tuple[int, int] = HistoryLimits().pair()
    policy: scheduling.ConcurrencyPolicy = scheduling.ConcurrencyPolicy.ALLOW
    catch_up: scheduling.CatchUpPolicy = scheduling.CatchUpPolicy.ONE
    window: timedelta | None = None
    grace: timedelta = scheduling.DEFAULT_GRACE
    template: RequestTemplate | None = None
    template_queue: QueueInfo | None = None
    job_ref: JobRef | None = None
    #: The next on-time run, prepared when the previous fire ended (see :class:`Armed`).
    armed: Armed | None = None

    def derive(self, spec: JobSpec) -> None:
        """Take from a (new) spec what fires need."""
        self.spec_json = spec.model_dump_json(by_alias=True).encode()
        self.queue_name = spec.queue
        self.suspend = spec.suspend
        self.backfill = spec.backfill
        self.limits = spec.history_limits.pair()
        self.policy = scheduling.ConcurrencyPolicy(spec.concurrency_policy)
        self.catch_up = scheduling.CatchUpPolicy(spec.catch_up.policy)
        window = spec.catch_up.window
        self.window = parse_duration(window) if window else None
        self.grace = parse_duration(spec.catch_up.grace)
        self.template = None
        self.template_queue = None
        self.armed = None

    @property
    def spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.spec_json)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def ref(self) -> JobRef:
        if self.job_ref is None:
            self.job_ref = JobRef(namespace=self.namespace, name=self.name, uid=self.uid)
        return self.job_ref

    def active_runs(self) -> set[str]:
        return (set(self.status_active) | set(self.sent)) - set(self.ended)

    @property
    def active(self) -> int:
        return len(self.active_runs())

    def trigger_pending(self) -> bool:
        return bool(self.trigger) and self.trigger not in (self.last_trigger, self.status_trigger)

    def observe_status(self, status: dict[str, Any], now: float) -> None:
        """Fold what a watch event says about the Job's runs into this view."""
        active = frozenset(
            str(a["runId"]) for a in status.get("active") or [] if a.get("runId") is not None
        )
        known = active | {str(r["runId"]) for r in status.get("runs") or [] if r.get("runId")}
        self.status_active = active
        self.sent = {r: t for r, t in self.sent.items() if r not in known and now - t < SENT_TTL}
        self.ended = {r: t for r, t in self.ended.items() if r in active or now - t < ENDED_TTL}
        # Where catch-up starts: the newest slot run, skipped, missed or passed while suspended.
        last = max(
            filter(
                None, (parse_time(status.get(f)) for f in ("lastScheduleTime", "lastHandledSlot"))
            ),
            default=None,
        )
        if last is not None and (self.last_slot is None or last > self.last_slot):
            self.last_slot = last
        held = parse_time(status.get("bufferedSlot"))
        if held is not None and scheduling.run_id_for_slot(self.uid, held) in known:
            held = None  # promoted already; this event's bufferedSlot lags behind
        self.status_buffered = held
        self.status_trigger = status.get("lastTrigger")
        counters = status.get("counters") or {}
        if counters.get("dispatched") or status.get("runs"):
            self.dispatched_once = True
        backfill = status.get("backfill") or {}
        if backfill.get("completionTime"):
            self.backfill_done = f"{backfill.get('from')}/{backfill.get('to')}"


def adopt_buffered(entry: Entry) -> None:
    """At the first fire of a Job this replica has just started firing: the slot BufferOne
    held for the previous holder (or before a restart) is held here now, unless its run is known
    to have been published."""
    entry.adopt = False
    held = entry.status_buffered
    if held is None or entry.buffered is not None:
        return
    if scheduling.run_id_for_slot(entry.uid, held) in entry.sent:
        return
    entry.buffered = held


def dispatches_now(entry: Entry) -> bool:
    """Whether the Job's concurrency policy lets a slot dispatch with its current active runs."""
    if entry.policy is scheduling.ConcurrencyPolicy.ALLOW:
        return True
    decision = scheduling.decide_overlap(entry.policy, active=entry.active, buffered=0)
    return decision.action is scheduling.OverlapAction.DISPATCH and not decision.skipped


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def runs_alone(entry: Entry, armed: Armed, queue: QueueInfo | None, now: datetime) -> bool:
    """Whether the full decision at ``now`` would publish exactly the armed run and nothing
    else (the version check of the armed path)."""
    if (
        armed.generation != entry.generation
        or entry.suspend
        or backfill_pending(entry)
        or not scheduling.runs_alone(armed.planned, last_slot=entry.last_slot, now=now)
        or entry.buffered is not None
        or entry.queue_problem is not None
        or not entry.ready_written
        or entry.trigger_pending()
    ):
        return False
    if queue is None or not queue.ready or queue != armed.queue:
        return False
    return dispatches_now(entry)


def backfill_marker(backfill: Backfill) -> str:
    """How a finished backfill is recorded (``status.backfill``'s ``from/to``)."""
    return f"{timefmt.rfc3339(backfill.from_)}/{timefmt.rfc3339(backfill.to)}"


def backfill_pending(entry: Entry) -> bool:
    backfill = entry.backfill
    return backfill is not None and entry.backfill_done != backfill_marker(backfill)
