"""The scheduler: one loop per operator process over a time-ordered heap of Jobs.

Jobs are not one kopf timer each: every Job is an entry in a heap keyed by its next due time, so
10,000 idle Jobs cost a heap and a dict. The loop sleeps until the earliest due entry (or until a
Job changes), fires the due Jobs whose shard this replica holds, and pushes each back with its next
due time. A fire asks the pure core what to run (catch-up, overlap), publishes each run request to
JetStream with ``Nats-Msg-Id = runId`` (so a slot published twice — by two replicas, a restart, a
retry — is enqueued once) and, once JetStream acknowledged it, records it in the status through the
coalesced status writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from kadence import constants
from kadence.client import Prepared, Requests, pub_ack, replied_at
from kadence.protocol import CancelRequest, JobRef, encode
from kadence_operator import scheduling, timefmt
from kadence_operator.api import (
    MAX_BACKFILL_SLOTS,
    TRIGGER_ANNOTATION,
    Backfill,
    HistoryLimits,
    JobSpec,
    parse_duration,
)
from kadence_operator.jobs.runs import QueueInfo, RequestTemplate, request_template, schedule_of
from kadence_operator.metrics import OperatorMetrics
from kadence_operator.results import fold
from kadence_operator.results.conditions import set_condition
from kadence_operator.scheduling.bursts import STAGE_LEAD_MAX, BurstWatch, stage_lead
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Status, StatusWriter

logger = logging.getLogger(__name__)

Key = tuple[str, str]
#: How long to wait before looking at a Job whose Queue is missing or not ready again.
QUEUE_RETRY = timedelta(seconds=10)
#: Jobs whose next slot is further away than this drop their request template between fires.
KEEP_TEMPLATE = timedelta(minutes=5)
#: How many Jobs fire at once (each awaits JetStream's ack of its publish).
FIRE_CONCURRENCY = 4096
#: A run this replica published is counted as active until the status lists it (or ends it);
#: after this long without seeing it there (the write was lost), it is forgotten.
SENT_TTL = 120.0
#: A run known to have ended stays excluded while stale watch events still list it as active.
ENDED_TTL = 60.0
#: Fires started later than this (seconds) after they were due are logged at INFO.
SLOW_BATCH = 0.5
#: How long a hand-over waits for the fires in progress to end.
HAND_OVER_WAIT = 5.0
#: Fires due this long after the first of a group are staged with it (and wait for the last).
STAGE_SPAN = timedelta(milliseconds=2)
#: What preparing one staged fire is assumed to cost until it has been measured, seconds.
STAGE_COST = 50e-6
#: Staged fires are checked and written this many at a time (NATS stores a write while the
#: loop checks the next).
STAGE_CHUNK = 100
#: Replies to fires are settled at most this many, and for at most this many seconds, at a
#: time (see :meth:`Scheduler._settle_replies`).
SETTLE_SLICE = 100
SETTLE_BUDGET = 0.002
#: While a burst's acks are still coming, settling waits (looking again every SETTLE_POLL
#: seconds) so the read loop has the CPU to take them, for at most SETTLE_DEFER seconds.
SETTLE_DEFER = 0.1
SETTLE_POLL = 0.002


@dataclass(slots=True)
class Armed:
    """A Job's next on-time run, prepared a whole interval ahead.

    When a fire ends, the scheduler plans the Job's next slot (:func:`scheduling.plan_slot`) and
    encodes its run request. When the slot is due and still runs alone
    (:func:`scheduling.runs_alone`: nothing to catch up, no trigger, no pending slot, the spec,
    Queue and overlap decision unchanged), the loop only publishes these bytes (staged ahead of
    the instant when many are due together: :meth:`Scheduler._stage_burst`), instead of each
    first computing its plan. Anything else takes the full path (:meth:`Scheduler._fire`),
    which decides the same.
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
class _StagedFire:
    entry: Entry
    armed: Armed
    request: Prepared
    #: Its heap time (still counted by the BurstWatch until it is written, for the holds).
    due: datetime
    #: The Job's :attr:`Entry.stamp` when it was staged.
    stamp: int
    #: Written, or handed to the full path.
    done: bool = False


@dataclass(slots=True)
class _Stage:
    """Armed fires due at one instant, prepared before it (see :meth:`Scheduler._stage_burst`)."""

    #: When they go out: the latest due time among them.
    at: datetime
    fires: list[_StagedFire]
    #: The Queues they were checked against (a changed one sends its Jobs the full path).
    queues: dict[Key, QueueInfo]
    #: The shards owned when they were staged.
    owned: frozenset[int]
    #: While ``alone[0] <= now < alone[1]`` every fire's slot still runs alone by the clock
    #: (:func:`scheduling.runs_alone_during`).
    alone: tuple[datetime, datetime]


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
        last = _parse_time(status.get("lastScheduleTime"))
        if last is not None and (self.last_slot is None or last > self.last_slot):
            self.last_slot = last
        self.status_trigger = status.get("lastTrigger")
        counters = status.get("counters") or {}
        if counters.get("dispatched") or status.get("runs"):
            self.dispatched_once = True
        backfill = status.get("backfill") or {}
        if backfill.get("completionTime"):
            self.backfill_done = f"{backfill.get('from')}/{backfill.get('to')}"


def _dispatches_now(entry: Entry) -> bool:
    """Whether the Job's concurrency policy lets a slot dispatch with its current active runs."""
    if entry.policy is scheduling.ConcurrencyPolicy.ALLOW:
        return True
    decision = scheduling.decide_overlap(entry.policy, active=entry.active, buffered=0)
    return decision.action is scheduling.OverlapAction.DISPATCH and not decision.skipped


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(order=True, slots=True)
class _Due:
    at: datetime
    seq: int
    key: Key = field(compare=False)
    version: int = field(compare=False)


class Scheduler:
    """Fires the Jobs of the shards this replica owns."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        nc: NATS,
        writer: StatusWriter,
        settings: OperatorSettings,
        queues: dict[Key, QueueInfo],
        post_event: Callable[[Key, str, str], Awaitable[None]] | None = None,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._js = js
        self._nc = nc
        # Dispatch publishes go through one reply subscription, not a request each.
        self._requests = Requests(nc)
        self._writer = writer
        self._settings = settings
        self._queues = queues
        self._post_event = post_event
        self._metrics = metrics
        self._clock = clock
        self._entries: dict[Key, Entry] = {}
        self._heap: list[_Due] = []
        #: Fires due per 10 ms, to keep background work out of the way of bursts.
        self._bursts = BurstWatch(quiet=settings.dispatch_quiet, burst=settings.dispatch_burst)
        self._seq = itertools.count()
        self._owned: frozenset[int] = frozenset()
        self._wake = asyncio.Event()
        self._fire_slots = asyncio.Semaphore(FIRE_CONCURRENCY)
        self._firing = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        #: The next burst, prepared and waiting for its instant; and what preparing a fire costs.
        self._stage: _Stage | None = None
        self._stage_cost = STAGE_COST
        #: The due time whose group was last considered for staging (not again, staged or not).
        self._stage_looked: datetime | None = None
        #: Replies to armed and staged fires not settled yet (see :meth:`_armed_acked`).
        self._replies: list[tuple[Entry, Armed, datetime, asyncio.Future[Msg], datetime]] = []
        #: Run requests acknowledged by JetStream, and how many of them were duplicates.
        self.published = 0
        self.duplicates = 0

    # ----------------------------------------------------------------- registry

    def refresh(self, body: dict[str, Any]) -> bool:
        """Take in a watch event of a known Job whose spec did not change (same uid and
        generation): only its status and annotations are read, the spec is not parsed again.
        False when the Job is unknown or has a new generation: call :meth:`upsert`.
        """
        meta = body["metadata"]
        entry = self._entries.get((meta["namespace"], meta["name"]))
        if (
            entry is None
            or entry.uid != meta["uid"]
            or entry.generation != int(meta.get("generation") or 0)
        ):
            return False
        self._observe(entry, body)
        return True

    def upsert(self, body: dict[str, Any], spec: JobSpec) -> None:
        """Register or refresh a valid Job from its body (called on every watch event).

        A Job is looked at again at once only when something that matters changed (a new Job or
        generation, a new trigger value, a buffered slot that may now run); otherwise it keeps
        its place in the heap, so the watch events of the operator's own status writes cost no
        fire.
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        uid = meta["uid"]
        generation = int(meta.get("generation") or 0)
        entry = self._entries.get(key)
        wake = False
        if entry is None or entry.uid != uid:
            if entry is not None:
                entry.stamp += 1  # replaced: a fire of the old one staged must not go out
            created = _parse_time(meta.get("creationTimestamp")) or self._clock()
            entry = Entry(
                namespace=key[0],
                name=key[1],
                uid=uid,
                generation=generation,
                created=created,
                spec_json=b"",
                schedule=schedule_of(spec, created=created),
                shard=scheduling.shard_for(uid, self._settings.shards),
            )
            entry.derive(spec)
            self._entries[key] = entry
            wake = True
        elif generation != entry.generation:
            entry.generation = generation
            entry.schedule = schedule_of(spec, created=entry.created)
            entry.ready_written = False
            entry.queue_problem = None
            entry.derive(spec)
            wake = True
        self._observe(entry, body, wake=wake)

    def _observe(self, entry: Entry, body: dict[str, Any], *, wake: bool = False) -> None:
        entry.stamp += 1
        trigger = (body["metadata"].get("annotations") or {}).get(TRIGGER_ANNOTATION)
        if trigger != entry.trigger:
            entry.trigger = trigger
            wake = wake or bool(trigger)
        entry.observe_status(body.get("status") or {}, time.monotonic())
        if entry.buffered is not None and entry.active == 0:
            wake = True
        if wake:
            self._wake_entry(entry)

    def remove(self, namespace: str, name: str) -> None:
        entry = self._entries.pop((namespace, name), None)
        if entry is not None:
            entry.stamp += 1

    def __len__(self) -> int:
        return len(self._entries)

    async def on_shards(self, owned: frozenset[int]) -> None:
        """Shard ownership changed: look at the Jobs of gained shards now (catch-up)."""
        gained = owned - self._owned
        self._owned = owned
        if gained:
            for entry in self._entries.values():
                if entry.shard in gained:
                    self._wake_entry(entry)

    async def hand_over(self, shards: frozenset[int]) -> None:
        """Before ``shards`` are released: let running fires end and write their Jobs' status."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HAND_OVER_WAIT):
                await self._quiet.wait()
        await self._writer.flush_keys([e.key for e in self._entries.values() if e.shard in shards])

    def note_finished(self, namespace: str, name: str, run_id: str | None = None) -> None:
        """A final result of a run of this Job was persisted: it is no longer active."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return
        if run_id is None:  # an unknown run: count one fewer
            active = sorted(entry.active_runs())
            run_id = active[0] if active else None
        if run_id is not None:
            entry.sent.pop(run_id, None)
            entry.ended[run_id] = time.monotonic()
        if entry.buffered is not None and entry.active == 0:
            self._wake_entry(entry)  # BufferOne: the pending slot runs now

    def hold_for(self) -> float:
        """Seconds background work (status writes, result folding) should wait now: a burst
        of at least ``dispatch_burst`` fires is due within ``dispatch_quiet`` seconds."""
        first = self._heap[0].at if self._heap else None
        if self._stage is not None and (first is None or self._stage.at < first):
            first = self._stage.at  # a staged burst still counts (it is not written yet)
        before = self._bursts.holds
        wait = self._bursts.hold(
            now=self._clock().timestamp(),
            mono=time.monotonic(),
            first=first.timestamp() if first is not None else None,
        )
        if self._bursts.holds != before and self._metrics is not None:
            self._metrics.dispatch_holds.inc()
        return wait

    def _acks_outstanding(self) -> bool:
        """Whether a burst's worth of publishes (``dispatch_stage``) still waits for acks."""
        return self._requests.pending >= max(1, self._settings.dispatch_stage)

    def _push(self, entry: Entry, at: datetime) -> None:
        entry.version = next(self._seq)
        # The loop sleeps until the earliest item: only an earlier one needs to wake it (each
        # fire pushes its Job again, and a wake-up per fire cost a loop turn each).
        earlier = not self._heap or at < self._heap[0].at
        heapq.heappush(self._heap, _Due(at, entry.version, entry.key, entry.version))
        due = at.timestamp()
        self._bursts.add(due)
        # So does a group that just became big enough to be staged (see _next_wake).
        if earlier or self._bursts.due_at(due) == self._settings.dispatch_stage:
            self._wake.set()

    def _wake_entry(self, entry: Entry) -> None:
        """Fire ``entry`` as soon as possible (after the fire in progress, if any)."""
        if entry.firing:
            entry.refire = True
        else:
            self._push(entry, self._clock())

    # ----------------------------------------------------------------- loop

    async def run(self, stop: asyncio.Event) -> None:
        fires: set[asyncio.Task[None]] = set()
        try:
            await self._loop(stop, fires)
        finally:
            self._drop_stage()
            # Let the fires in progress (tasks, and armed runs awaiting their acks) record
            # their runs.
            if fires:
                await asyncio.wait(set(fires), timeout=HAND_OVER_WAIT)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HAND_OVER_WAIT):
                    await self._quiet.wait()

    async def _loop(self, stop: asyncio.Event, fires: set[asyncio.Task[None]]) -> None:
        while not stop.is_set():
            now = self._clock()
            if self._stage is not None and now >= self._stage.at:
                await self._write_stage(now)
            fired = armed_fires = 0
            earliest: datetime | None = None
            while self._heap and self._heap[0].at <= now:
                due = heapq.heappop(self._heap)
                self._bursts.remove(due.at.timestamp())
                earliest = due.at if earliest is None else earliest
                entry = self._entries.get(due.key)
                if entry is None or entry.version != due.version:
                    continue  # removed or superseded by a newer push
                if entry.shard not in self._owned:
                    continue  # on_shards pushes it again if this replica gains the shard
                if entry.firing:
                    entry.refire = True  # one fire of a Job at a time: again once it ends
                    continue
                armed = entry.armed
                if armed is not None and armed.version == due.version:
                    entry.armed = None
                    if self._runs_alone(entry, armed, now):
                        # Prepared a slot ago: publish now, the rest when JetStream acks it.
                        await self._fire_armed(entry, armed, now)
                        fired += 1
                        armed_fires += 1
                        continue
                # Each fire is its own task and the loop does not wait for it: Jobs due while
                # others await their publish acks fire at once, not after the slowest of them.
                entry.firing = True  # at once: the Job must not fire again before the task runs
                task = asyncio.create_task(self._fire_guarded(entry, now))
                fires.add(task)
                task.add_done_callback(fires.discard)
                fired += 1
            if fired and self._metrics is not None:
                self._metrics.fires.labels("armed").inc(armed_fires)
                self._metrics.fires.labels("full").inc(fired - armed_fires)
            if fired and earliest is not None:
                late = (self._clock() - earliest).total_seconds()
                log = logger.info if late > SLOW_BATCH else logger.debug
                log("fired %d Job(s), %.0f ms after the first was due", fired, late * 1000)
            if self._stage is None:
                await self._stage_burst(now)
            timeout = max(0.0, min(1.0, self._next_wake()))
            self._wake.clear()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            else:
                await asyncio.sleep(0)  # let the fires just started run

    def _next_wake(self) -> float:
        """Seconds until the loop has something to do: the next fire, the next staged write,
        or the moment to start staging the next burst."""
        now = self._clock()
        wake = 1.0
        if self._heap:
            first = self._heap[0].at
            wake = (first - now).total_seconds()
            lead = self._lead(first) if self._stage is None else 0.0
            if lead > 0:
                # A burst: look again when its size is known (its Jobs are pushed as the
                # previous fires are acked), then start staging it its lead ahead.
                wake -= lead if wake <= STAGE_LEAD_MAX else STAGE_LEAD_MAX
        if self._stage is not None:
            wake = min(wake, (self._stage.at - now).total_seconds())
        return wake

    def _lead(self, first: datetime) -> float:
        """How long before ``first`` to start staging the fires due then (0: not a burst)."""
        size = self._settings.dispatch_stage
        if size <= 0 or first == self._stage_looked:
            return 0.0
        count = self._bursts.due_at(first.timestamp())
        return stage_lead(count, self._stage_cost) if count >= size else 0.0

    async def _stage_burst(self, now: datetime) -> None:
        """Prepare the burst due next, if one is due within its lead.

        A thousand Jobs due at the same second cost the loop about 20-50 µs each to check and
        encode: done when they are due, the last run would leave tens of milliseconds late. So
        when at least ``dispatch_stage`` fires are due at one instant, the loop does that work
        just before it -- each armed fire that runs alone is checked and its request encoded
        (:meth:`Requests.prepare`) -- and at the instant writes them, a hundred at a time
        (:meth:`_write_stage`), after checking again, cheaply, that nothing changed. Nothing
        is published before it is due. The Jobs stay "firing" while staged: a watch event that
        would look at one again marks it for another look, which makes it take the full path.
        """
        if not self._heap:
            return
        first = self._heap[0].at
        lead = self._lead(first)
        if lead <= 0 or (first - now).total_seconds() > lead:
            return
        self._stage_looked = first
        started = time.perf_counter()
        try:
            await self._requests.ready()
        except Exception as error:  # e.g. a closed connection: the fires take their own path
            logger.warning("not staging the fires due %s: %s", _iso(first), error)
            return
        limit = first + STAGE_SPAN
        owned = self._owned
        staged: list[_StagedFire] = []
        queues: dict[Key, QueueInfo] = {}
        others: list[_Due] = []
        at = first
        while self._heap and self._heap[0].at <= limit:
            due = heapq.heappop(self._heap)
            entry = self._entries.get(due.key)
            if entry is None or entry.version != due.version:
                self._bursts.remove(due.at.timestamp())
                continue  # removed or superseded, as in the loop
            armed = entry.armed
            if (
                entry.firing
                or entry.shard not in owned
                or armed is None
                or armed.version != due.version
                or not self._runs_alone(entry, armed, limit)
            ):
                others.append(due)  # the loop handles it when it is due
                continue
            entry.armed = None
            self._fire_started(entry)
            try:
                request = self._requests.prepare(
                    armed.subject,
                    armed.payload,
                    timeout=10,
                    headers={constants.MSG_ID_HEADER: armed.run_id},
                )
            except Exception:
                self._bursts.remove(due.at.timestamp())
                self._fire_failed(entry, now)
                self._fire_ended(entry)
                continue
            staged.append(_StagedFire(entry, armed, request, due.at, entry.stamp))
            queues[(entry.namespace, entry.queue_name)] = armed.queue
            at = max(at, due.at)
        for due in others:
            heapq.heappush(self._heap, due)
        if staged:
            windows = [scheduling.runs_alone_during(fire.armed.planned) for fire in staged]
            alone = (max(w[0] for w in windows), min(w[1] for w in windows))
            self._stage = _Stage(at, staged, queues, owned, alone)
            cost = (time.perf_counter() - started) / len(staged)
            self._stage_cost = 0.5 * self._stage_cost + 0.5 * cost
            logger.debug("staged %d fire(s) due %s", len(staged), _iso(at))

    async def _write_stage(self, now: datetime) -> None:
        """Publish the staged burst, now due: those whose Job did not change.

        They go out in writes of :data:`STAGE_CHUNK`, each checked just before, so NATS stores
        the first ones while the loop checks the next. Each run is a publish of its own,
        answered by its own ``PubAck``.
        """
        stage, self._stage = self._stage, None
        if stage is None:
            return
        changed = {key for key, queue in stage.queues.items() if self._queues.get(key) != queue}
        # Checked once for the whole burst: then a fire whose Job's stamp did not move since it
        # was staged still runs alone, as the full check (~3 µs a fire at the instant) would say.
        at_once = (
            not changed and stage.owned is self._owned and stage.alone[0] <= now < stage.alone[1]
        )
        fires = stage.fires
        sent = 0
        try:
            for start in range(0, len(fires), STAGE_CHUNK):
                ready: list[_StagedFire] = []
                for fire in fires[start : start + STAGE_CHUNK]:
                    entry = fire.entry
                    if (
                        at_once and entry.stamp == fire.stamp and not entry.refire
                    ) or self._unchanged(fire, now, changed):
                        ready.append(fire)
                    else:
                        # Something changed since it was staged: the full path decides at once.
                        fire.done = True
                        self._requests.discard(fire.request)
                        entry.refire = True
                        self._fire_ended(entry)
                await self._requests.write([fire.request for fire in ready])
                for fire in ready:
                    fire.done = True
                    fire.request.reply.add_done_callback(
                        functools.partial(self._armed_acked, fire.entry, fire.armed, now)
                    )
                sent += len(ready)
        except Exception:
            unsent = [fire for fire in fires if not fire.done]
            logger.exception("publishing %d staged run(s) failed; retrying in 5s", len(unsent))
            for fire in unsent:
                self._requests.discard(fire.request)
                fire.entry.refire = False
                self._push(fire.entry, now + timedelta(seconds=5))
                self._fire_ended(fire.entry)
        finally:
            for fire in fires:  # counted until now, for the holds
                self._bursts.remove(fire.due.timestamp())
        if self._metrics is not None:
            self._metrics.fires.labels("staged").inc(sent)
        late = (self._clock() - stage.at).total_seconds()
        log = logger.info if late > SLOW_BATCH else logger.debug
        log("published %d staged run(s), %.1f ms after they were due", sent, late * 1000)

    def _unchanged(self, fire: _StagedFire, now: datetime, changed: set[Key]) -> bool:
        """Whether a staged fire still runs alone at ``now``; ``changed``: the Queues that
        changed since the burst was staged.

        Cheaper than :meth:`_runs_alone`, which it relies on having passed at staging: while
        staged the Job is firing, so whatever else could change its decision (a new
        generation or trigger, a buffered slot) marks it ``refire`` instead.
        """
        entry, armed = fire.entry, fire.armed
        if (
            entry.refire
            or self._entries.get(entry.key) is not entry
            or entry.shard not in self._owned
            or entry.generation != armed.generation
            or not scheduling.runs_alone(armed.planned, last_slot=entry.last_slot, now=now)
            or (changed and (entry.namespace, entry.queue_name) in changed)
        ):
            return False
        return _dispatches_now(entry)

    def _drop_stage(self) -> None:
        """The loop is stopping: the staged fires are not published."""
        stage, self._stage = self._stage, None
        for fire in stage.fires if stage is not None else []:
            self._bursts.remove(fire.due.timestamp())
            self._requests.discard(fire.request)
            fire.entry.refire = True  # back in the heap, should the loop run again
            self._fire_ended(fire.entry)

    async def _fire_guarded(self, entry: Entry, now: datetime) -> None:
        self._fire_started(entry)
        try:
            async with self._fire_slots:
                await self._fire(entry, now)
        except Exception:
            self._fire_failed(entry, now)
        finally:
            self._fire_ended(entry)

    def _fire_failed(self, entry: Entry, now: datetime) -> None:
        """Called in an ``except`` block: the fire is tried again in 5 s. A NATS error (the
        Queue's stream gone, a timeout, a closed connection) is a condition of the cluster,
        logged in one line; anything else is a bug, logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, nats.errors.Error):
            logger.warning(
                "firing %s/%s failed: %s; retrying in 5s",
                *entry.key,
                str(error) or type(error).__name__,
            )
        else:
            logger.exception("firing %s/%s failed; retrying in 5s", *entry.key)
        entry.refire = False
        self._push(entry, now + timedelta(seconds=5))

    def _fire_started(self, entry: Entry) -> None:
        """A fire of ``entry`` begins (a task, an armed publish or a staged one);
        :meth:`_fire_ended` ends it."""
        entry.firing = True
        self._firing += 1
        self._quiet.clear()

    def _fire_ended(self, entry: Entry) -> None:
        entry.firing = False
        self._firing -= 1
        if self._firing == 0:
            self._quiet.set()
        if entry.refire:
            entry.refire = False
            self._push(entry, self._clock())

    def _runs_alone(self, entry: Entry, armed: Armed, now: datetime) -> bool:
        """Whether the full fire at ``now`` would publish exactly the armed run and nothing else."""
        if (
            armed.generation != entry.generation
            or not scheduling.runs_alone(armed.planned, last_slot=entry.last_slot, now=now)
            or entry.buffered is not None
            or entry.queue_problem is not None
            or not entry.ready_written
            or entry.trigger_pending()
        ):
            return False
        queue = self._queues.get((entry.namespace, entry.queue_name))
        if queue is None or not queue.ready or queue != armed.queue:
            return False
        return _dispatches_now(entry)

    async def _fire_armed(self, entry: Entry, armed: Armed, now: datetime) -> None:
        """Publish the armed run; :meth:`_armed_acked` does the rest once JetStream acks it."""
        self._fire_started(entry)
        try:
            acked = await self._requests.send(
                armed.subject,
                armed.payload,
                timeout=10,
                headers={constants.MSG_ID_HEADER: armed.run_id},
            )
        except Exception:
            self._fire_failed(entry, now)
            self._fire_ended(entry)
            return
        acked.add_done_callback(functools.partial(self._armed_acked, entry, armed, now))

    def _armed_acked(
        self, entry: Entry, armed: Armed, now: datetime, reply: asyncio.Future[Msg]
    ) -> None:
        """A fire's reply came: note when, and leave the rest to :meth:`_settle_replies`.

        The reply future's done callback, run right after the reply subscription resolved it. A
        burst's replies come a thousand at a time and each costs ~100 µs of bookkeeping (the
        status change, the next slot, its encoded request): taken one after the other, the last ack
        would be timed only after all the others' bookkeeping. So the time each ``PubAck``
        came is taken here -- the moment the reply subscription took it (:func:`replied_at`),
        which under load is milliseconds before this callback runs -- and one call settles the
        replies.
        """
        acked = self._clock()
        read_at = replied_at(reply)
        if read_at is not None:  # taken off the connection a little earlier
            acked -= timedelta(seconds=max(0.0, time.monotonic() - read_at))
        self._replies.append((entry, armed, now, reply, acked))
        if len(self._replies) == 1:
            asyncio.get_running_loop().call_soon(self._settle_replies)

    def _settle_replies(self) -> None:
        """Settle the replies noted by :meth:`_armed_acked` once the burst's other replies
        are in (or :data:`SETTLE_DEFER` has passed), :data:`SETTLE_SLICE` and
        :data:`SETTLE_BUDGET` at a time: between slices the read loop can take the replies
        still coming."""
        replies = self._replies
        if not replies:
            return
        if (
            self._acks_outstanding()
            and (self._clock() - replies[0][4]).total_seconds() < SETTLE_DEFER
        ):
            asyncio.get_running_loop().call_later(SETTLE_POLL, self._settle_replies)
            return
        end = time.perf_counter() + SETTLE_BUDGET
        done = 0
        for entry, armed, now, reply, acked in replies[:SETTLE_SLICE]:
            self._armed_settled(entry, armed, now, reply, acked)
            done += 1
            if time.perf_counter() >= end:
                break
        del replies[:done]
        if replies:
            asyncio.get_running_loop().call_soon(self._settle_replies)

    def _armed_settled(
        self,
        entry: Entry,
        armed: Armed,
        now: datetime,
        reply: asyncio.Future[Msg],
        acked: datetime,
    ) -> None:
        try:
            if reply.cancelled():  # not published for sure: look again like after a failure
                entry.refire = False
                self._push(entry, now + timedelta(seconds=5))
                return
            planned = armed.planned
            self._published(
                entry,
                pub_ack(reply.result()),
                run_id=armed.run_id,
                slot=planned.slot,
                trigger="Schedule",
                due=planned.due,
                acked=acked,
            )
            entry.last_slot = planned.slot
            assert entry.schedule is not None
            self._plan_next(entry, entry.schedule, now, plan_now=now)
        except Exception:
            self._fire_failed(entry, now)
        finally:
            self._fire_ended(entry)

    def _submit(
        self, entry: Entry, mutation: Callable[[Status], Status], *, supersede: str | None = None
    ) -> None:
        self._writer.post(entry.namespace, entry.name, mutation, uid=entry.uid, supersede=supersede)

    def _count(self, reason: str, amount: int = 1) -> None:
        if self._metrics is not None and amount:
            self._metrics.slots_not_run.labels(reason).inc(amount)

    async def _fire(self, entry: Entry, now: datetime) -> None:
        queue = self._queues.get((entry.namespace, entry.queue_name))
        problem = None
        if queue is None:
            problem = f'spec.queue: Queue "{entry.queue_name}" not found in {entry.namespace}'
        elif not queue.ready:
            problem = f'spec.queue: Queue "{entry.queue_name}" is not Ready: {queue.reason}'
        if problem is not None or queue is None:
            await self._queue_problem(entry, problem or "queue missing", now)
            self._push(entry, now + QUEUE_RETRY)
            return
        if entry.queue_problem is not None or not entry.ready_written:
            entry.queue_problem = None
            entry.ready_written = True
            try:
                await self._fire_ready(entry, queue, now)
            finally:
                # After the runs' records, so that a new Job's first status write has them all.
                self._submit(entry, _ready_mutation(entry, now))
        else:
            await self._fire_ready(entry, queue, now)

    async def _fire_ready(self, entry: Entry, queue: QueueInfo, now: datetime) -> None:
        """The part of a fire once the Queue is known to be ready."""
        # Manual trigger: each new annotation value asks for one run, even while suspended.
        if entry.trigger and entry.trigger_pending():
            value = entry.trigger
            run_id = scheduling.run_id_for_trigger(entry.uid, value)
            await self._dispatch(entry, queue, run_id=run_id, slot=now, trigger="Manual")
            entry.last_trigger = value
            self._submit(entry, functools.partial(_set_field, "lastTrigger", value))

        if entry.schedule is None:
            if not entry.dispatched_once:
                run_id = scheduling.run_id_for_trigger(entry.uid, "once")
                await self._dispatch(
                    entry, queue, run_id=run_id, slot=entry.created, trigger="Schedule"
                )
                entry.dispatched_once = True
            self._submit(entry, _next_run_mutation(entry, None, now), supersede="next-run")
            return

        await self._backfill(entry, queue, now)

        schedule = entry.schedule
        policy = entry.policy
        if entry.suspend:
            # Suspended: slots pass without running and without counting as missed; a buffered
            # slot is dropped (skipped).
            if entry.buffered is not None:
                entry.buffered = None
                self._submit(entry, functools.partial(fold.record_skipped, skipped=1))
                self._count("skipped")
            previous = scheduling.previous_fire_time(schedule, at_or_before=now)
            if previous is not None and (entry.last_slot is None or previous > entry.last_slot):
                entry.last_slot = previous
            upcoming = scheduling.next_fire_time(schedule, after=now)
            self._submit(entry, _next_run_mutation(entry, upcoming, now), supersede="next-run")
            if upcoming is not None:
                self._push(entry, upcoming)
            return

        # BufferOne: the pending slot runs once nothing is active any more.
        if entry.buffered is not None and entry.active == 0:
            slot, entry.buffered = entry.buffered, None
            run_id = scheduling.run_id_for_slot(entry.uid, slot)
            await self._dispatch(entry, queue, run_id=run_id, slot=slot, trigger="Schedule")

        # The newest slot is not planned before its dispatch time (spread, jitter): a Job looked
        # at early (a watch event) must not publish it ahead of time.
        plan_now = now
        newest = scheduling.previous_fire_time(schedule, at_or_before=now)
        deferred = False
        if newest is not None and (entry.last_slot is None or newest > entry.last_slot):
            due = scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=newest)
            if due > now:
                plan_now = newest - timedelta(microseconds=1)
                deferred = True
        plan = scheduling.plan_catch_up(
            schedule,
            job_uid=entry.uid,
            last_slot=entry.last_slot,
            now=plan_now,
            policy=entry.catch_up,
            window=entry.window,
        )
        if plan.missed:
            self._submit(entry, functools.partial(fold.record_skipped, missed=plan.missed))
            self._count("missed", plan.missed)
        for slot in plan.to_run:
            decision = scheduling.decide_overlap(
                policy, active=entry.active, buffered=1 if entry.buffered is not None else 0
            )
            if decision.drop_buffered:
                entry.buffered = None
            if decision.skipped:
                skipped = functools.partial(fold.record_skipped, skipped=decision.skipped)
                self._submit(entry, skipped)
                self._count("skipped", decision.skipped)
            if decision.action is scheduling.OverlapAction.SKIP:
                continue
            if decision.action is scheduling.OverlapAction.BUFFER:
                entry.buffered = slot
                self._count("buffered")
                continue
            if decision.action is scheduling.OverlapAction.REPLACE:
                await self._cancel_active(entry)
            on_time = slot == plan.on_time
            run_id = scheduling.run_id_for_slot(entry.uid, slot)
            due_at = (
                scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=slot)
                if on_time
                else None
            )
            await self._dispatch(
                entry,
                queue,
                run_id=run_id,
                slot=slot,
                trigger="Schedule" if on_time else "CatchUp",
                due=due_at,
            )
        if plan.last_slot is not None:
            entry.last_slot = plan.last_slot
        self._plan_next(
            entry, schedule, now, plan_now=plan_now, deferred=newest if deferred else None
        )

    def _plan_next(
        self,
        entry: Entry,
        schedule: scheduling.Schedule,
        now: datetime,
        *,
        plan_now: datetime,
        deferred: datetime | None = None,
    ) -> None:
        """After a fire: record and queue the Job's next slot, and arm its run when it can."""
        nxt: datetime | None
        if deferred is not None:
            nxt = deferred
        elif entry.last_slot is not None:
            nxt = scheduling.next_fire_time(schedule, after=max(entry.last_slot, plan_now))
        else:
            nxt = scheduling.next_fire_time(schedule, after=plan_now)
        self._submit(entry, _next_run_mutation(entry, nxt, now), supersede="next-run")
        if nxt is None or nxt - now > KEEP_TEMPLATE:
            # A Job that fires rarely rebuilds its request template (~65 µs) when it next fires
            # rather than keep it (and its JobRef) in memory all the while.
            entry.template = entry.template_queue = entry.job_ref = None
        if nxt is None:
            return
        planned = scheduling.plan_slot(
            schedule, job_uid=entry.uid, last_slot=entry.last_slot, slot=nxt
        )
        self._push(
            entry,
            planned.due
            if planned is not None
            else scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=nxt),
        )
        template, queue = entry.template, entry.template_queue
        if planned is None or template is None or queue is None or self._backfill_pending(entry):
            return
        run_id = scheduling.run_id_for_slot(entry.uid, nxt)
        entry.armed = Armed(
            planned=planned,
            run_id=run_id,
            subject=template.subject,
            payload=template.encode(run_id=run_id, scheduled_at=nxt),
            version=entry.version,
            generation=entry.generation,
            queue=queue,
        )

    @staticmethod
    def _backfill_pending(entry: Entry) -> bool:
        backfill = entry.backfill
        return backfill is not None and entry.backfill_done != _backfill_marker(backfill)

    async def _backfill(self, entry: Entry, queue: QueueInfo, now: datetime) -> None:
        backfill = entry.backfill
        if backfill is None or entry.schedule is None:
            return
        marker = _backfill_marker(backfill)
        if entry.backfill_done == marker:
            return
        # [from, to): the end is exclusive.
        slots = scheduling.backfill_slots(
            entry.schedule,
            from_=backfill.from_,
            to=backfill.to - timedelta(microseconds=1),
            cap=MAX_BACKFILL_SLOTS,
        )
        for slot in slots:
            run_id = scheduling.run_id_for_slot(entry.uid, slot)
            await self._dispatch(entry, queue, run_id=run_id, slot=slot, trigger="Backfill")
        entry.backfill_done = marker
        done = {
            "from": _iso(backfill.from_),
            "to": _iso(backfill.to),
            "dispatched": len(slots),
            "completionTime": _iso(now),
        }
        self._submit(entry, functools.partial(_set_field, "backfill", done))
        logger.info("%s/%s: backfill %s dispatched %d run(s)", *entry.key, marker, len(slots))

    async def _dispatch(
        self,
        entry: Entry,
        queue: QueueInfo,
        *,
        run_id: str,
        slot: datetime,
        trigger: str,
        due: datetime | None = None,
    ) -> None:
        """Publish one run and, once JetStream acknowledged it, record it in the status.

        ``due`` (on-time scheduled runs) is when the run was due: the lag to the ack is
        exported as a histogram.
        """
        template = entry.template
        if template is None or entry.template_queue != queue:
            template = request_template(
                spec=entry.spec,
                job=entry.ref,
                queue=queue,
                default_bucket=self._settings.output_bucket,
            )
            entry.template, entry.template_queue = template, queue
        ack = await self._requests.publish(
            template.subject,
            template.encode(run_id=run_id, scheduled_at=slot),
            timeout=10,
            headers={constants.MSG_ID_HEADER: run_id},
        )
        self._published(entry, ack, run_id=run_id, slot=slot, trigger=trigger, due=due)

    def _published(
        self,
        entry: Entry,
        ack: PubAck,
        *,
        run_id: str,
        slot: datetime,
        trigger: str,
        due: datetime | None,
        acked: datetime | None = None,
    ) -> None:
        """JetStream acknowledged a run (at ``acked``, by default now): count it and record it
        in the status."""
        if acked is None:
            acked = self._clock()
        self.published += 1
        entry.sent[run_id] = time.monotonic()
        if self._metrics is not None:
            self._metrics.dispatches.labels(trigger).inc()
            if due is not None:
                self._metrics.observe_lag(max(0.0, (acked - due).total_seconds()))
        if ack.duplicate:
            self.duplicates += 1
            if self._metrics is not None:
                self._metrics.duplicates.inc()
            logger.info(
                "run %s (%s) of %s/%s was already enqueued: JetStream dropped the duplicate",
                run_id,
                _iso(slot),
                *entry.key,
            )
        else:
            logger.debug(
                "dispatched run %s (%s, %s) of %s/%s", run_id, _iso(slot), trigger, *entry.key
            )
        limits = entry.limits
        self._submit(
            entry,
            functools.partial(
                _record_dispatch, run_id=run_id, scheduled_at=slot, trigger=trigger, limits=limits
            ),
        )

    async def _cancel_active(self, entry: Entry) -> None:
        """Replace policy: ask workers to cancel the Job's running attempt (core NATS).

        The replaced runs stop counting as active here at once; the worker's ``Cancelled``
        result ends them in the status.
        """
        replaced = entry.active_runs()
        request = CancelRequest(job_uid=entry.uid, run_ids=tuple(sorted(replaced)))
        await self._nc.publish(
            constants.cancel_subject(entry.namespace, entry.name), encode(request)
        )
        if self._metrics is not None:
            self._metrics.cancels.inc()
        now = time.monotonic()
        for run_id in replaced:
            entry.sent.pop(run_id, None)
            entry.ended[run_id] = now
        logger.info("%s/%s: asked workers to cancel %s (Replace)", *entry.key, sorted(replaced))

    async def _queue_problem(self, entry: Entry, problem: str, now: datetime) -> None:
        if entry.queue_problem == problem:
            return
        entry.queue_problem = problem
        generation = entry.generation

        def mutation(status: Status) -> Status:
            return {
                **status,
                "observedGeneration": generation,
                "conditions": set_condition(
                    status.get("conditions", []),
                    type_="Ready",
                    status=False,
                    reason="QueueNotReady",
                    message=problem,
                    now=now,
                    generation=generation,
                ),
            }

        self._submit(entry, mutation)
        if self._post_event is not None:
            await self._post_event(entry.key, "QueueNotReady", problem)


def _record_dispatch(
    status: Status, *, run_id: str, scheduled_at: datetime, trigger: str, limits: tuple[int, int]
) -> Status:
    """Record a dispatched run; a backfilled one leaves ``lastScheduleTime`` alone.

    ``lastScheduleTime`` is where catch-up starts after a restart or a fail-over: a backfill of
    last month must not make every slot since then look missed.
    """
    new = fold.record_dispatch(
        status, run_id=run_id, scheduled_at=scheduled_at, trigger=trigger, limits=limits
    )
    if trigger == "Backfill":
        if status.get("lastScheduleTime"):
            new["lastScheduleTime"] = status["lastScheduleTime"]
        else:
            new.pop("lastScheduleTime", None)
    return new


def _backfill_marker(backfill: Backfill) -> str:
    return f"{_iso(backfill.from_)}/{_iso(backfill.to)}"


def _set_field(name: str, value: Any, status: Status) -> Status:
    return {**status, name: value}


_iso = timefmt.rfc3339


def _ready_mutation(entry: Entry, now: datetime) -> Callable[[Status], Status]:
    generation = entry.generation

    def mutation(status: Status) -> Status:
        return {
            **status,
            "observedGeneration": generation,
            "conditions": set_condition(
                status.get("conditions", []),
                type_="Ready",
                status=True,
                reason="Valid",
                message="spec is valid and the queue is ready",
                now=now,
                generation=generation,
            ),
        }

    return mutation


def _next_run_mutation(
    entry: Entry, nxt: datetime | None, now: datetime
) -> Callable[[Status], Status]:
    generation = entry.generation
    suspended = entry.suspend

    def mutation(status: Status) -> Status:
        new = dict(status)
        if nxt is None:
            new.pop("nextRunTime", None)
        else:
            new["nextRunTime"] = _iso(nxt)
        conditions = set_condition(
            status.get("conditions", []),
            type_="Scheduled",
            status=nxt is not None and not suspended,
            reason="Suspended" if suspended else ("NextRunPlanned" if nxt else "NoMoreRuns"),
            message=f"next run at {_iso(nxt)}" if nxt else "no further slots",
            now=now,
            generation=generation,
        )
        conditions = set_condition(
            conditions,
            type_="Suspended",
            status=suspended,
            reason="Suspended" if suspended else "Active",
            message="spec.suspend is true" if suspended else "scheduling is active",
            now=now,
            generation=generation,
        )
        new["conditions"] = conditions
        new["observedGeneration"] = generation
        return new

    return mutation
