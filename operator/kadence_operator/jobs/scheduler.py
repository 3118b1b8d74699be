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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from kadence import constants
from kadence.protocol import JobRef, encode
from kadence_operator import scheduling
from kadence_operator.api import TRIGGER_ANNOTATION, JobSpec, parse_duration
from kadence_operator.jobs.runs import QueueInfo, build_request, schedule_of
from kadence_operator.results import fold
from kadence_operator.results.conditions import set_condition
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Status, StatusWriter

logger = logging.getLogger(__name__)

Key = tuple[str, str]
#: How long to wait before looking at a Job whose Queue is missing or not ready again.
QUEUE_RETRY = timedelta(seconds=10)


@dataclass
class Entry:
    """The scheduler's view of one valid Job."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: JobSpec
    schedule: scheduling.Schedule | None
    shard: int
    last_slot: datetime | None
    trigger: str | None
    last_trigger: str | None
    dispatched_once: bool
    active: int
    backfill_done: str | None
    version: int = 0
    queue_problem: str | None = None
    ready_written: bool = False

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def ref(self) -> JobRef:
        return JobRef(namespace=self.namespace, name=self.name, uid=self.uid)

    @property
    def limits(self) -> tuple[int, int]:
        return (self.spec.history_limits.succeeded, self.spec.history_limits.failed)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(order=True)
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
        writer: StatusWriter,
        settings: OperatorSettings,
        queues: dict[Key, QueueInfo],
        post_event: Callable[[Key, str, str], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._js = js
        self._writer = writer
        self._settings = settings
        self._queues = queues
        self._post_event = post_event
        self._clock = clock
        self._entries: dict[Key, Entry] = {}
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._owned: frozenset[int] = frozenset()
        self._wake = asyncio.Event()
        #: Publish-acked lag of each scheduled dispatch, seconds (the benchmark reads it).
        self.lags: list[float] = []
        self.published = 0

    # ----------------------------------------------------------------- registry

    def upsert(self, body: dict[str, Any], spec: JobSpec) -> None:
        """Register or refresh a valid Job from its body (called on every watch event)."""
        meta = body["metadata"]
        status = body.get("status") or {}
        key = (meta["namespace"], meta["name"])
        created = _parse_time(meta.get("creationTimestamp")) or self._clock()
        old = self._entries.get(key)
        last_slot = _parse_time(status.get("lastScheduleTime"))
        if old is not None and old.uid == meta["uid"] and old.last_slot is not None:
            last_slot = max(old.last_slot, last_slot) if last_slot else old.last_slot
        counters = status.get("counters") or {}
        backfill_status = status.get("backfill") or {}
        entry = Entry(
            namespace=key[0],
            name=key[1],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            created=created,
            spec=spec,
            schedule=schedule_of(spec, created=created),
            shard=scheduling.shard_for(meta["uid"], self._settings.shards),
            last_slot=last_slot,
            trigger=(meta.get("annotations") or {}).get(TRIGGER_ANNOTATION),
            last_trigger=status.get("lastTrigger"),
            dispatched_once=bool(counters.get("dispatched")) or bool(status.get("runs")),
            active=len(status.get("active") or []),
            backfill_done=(
                f"{backfill_status.get('from')}/{backfill_status.get('to')}"
                if backfill_status.get("completionTime")
                else None
            ),
            version=(old.version + 1) if old else 0,
        )
        if old is not None and old.uid == entry.uid and old.generation == entry.generation:
            entry.ready_written = old.ready_written
            entry.queue_problem = old.queue_problem
        if old is not None and old.uid == entry.uid and old.last_trigger and not entry.last_trigger:
            entry.last_trigger = old.last_trigger  # our own write has not come back yet
        self._entries[key] = entry
        self._push(entry, self._clock())

    def remove(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._entries)

    async def on_shards(self, owned: frozenset[int]) -> None:
        """Shard ownership changed: look at the Jobs of gained shards now (catch-up)."""
        gained = owned - self._owned
        self._owned = owned
        if gained:
            now = self._clock()
            for entry in self._entries.values():
                if entry.shard in gained:
                    self._push(entry, now)

    def _push(self, entry: Entry, at: datetime) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._seq), entry.key, entry.version))
        self._wake.set()

    # ----------------------------------------------------------------- loop

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._clock()
            while self._heap and self._heap[0].at <= now:
                due = heapq.heappop(self._heap)
                entry = self._entries.get(due.key)
                if entry is None or entry.version != due.version:
                    continue  # removed or superseded by a newer push
                if entry.shard not in self._owned:
                    continue  # on_shards pushes it again if this replica gains the shard
                try:
                    await self._fire(entry, now)
                except Exception:
                    logger.exception("firing %s/%s failed; retrying in 5s", *entry.key)
                    entry.version += 1
                    self._push(entry, now + timedelta(seconds=5))
            timeout = 1.0
            if self._heap:
                timeout = max(0.0, min(1.0, (self._heap[0].at - self._clock()).total_seconds()))
            self._wake.clear()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def _submit(self, entry: Entry, mutation: Callable[[Status], Status]) -> None:
        future = self._writer.submit(entry.namespace, entry.name, mutation, uid=entry.uid)
        future.add_done_callback(_log_failure)

    async def _fire(self, entry: Entry, now: datetime) -> None:
        queue = self._queues.get((entry.namespace, entry.spec.queue))
        problem = None
        if queue is None:
            problem = f'spec.queue: Queue "{entry.spec.queue}" not found in {entry.namespace}'
        elif not queue.ready:
            problem = f'spec.queue: Queue "{entry.spec.queue}" is not Ready: {queue.reason}'
        if problem is not None or queue is None:
            await self._queue_problem(entry, problem or "queue missing", now)
            entry.version += 1
            self._push(entry, now + QUEUE_RETRY)
            return
        if entry.queue_problem is not None or not entry.ready_written:
            entry.queue_problem = None
            entry.ready_written = True
            self._submit(entry, _ready_mutation(entry, now))

        # Manual trigger: each new annotation value asks for one run, even while suspended.
        if entry.trigger and entry.trigger != entry.last_trigger:
            value = entry.trigger
            run_id = scheduling.run_id_for_trigger(entry.uid, value)
            await self._dispatch(entry, queue, run_id=run_id, slot=now, trigger="Manual", now=now)
            entry.last_trigger = value
            self._submit(entry, functools.partial(_set_field, "lastTrigger", value))

        if entry.schedule is None:
            if not entry.dispatched_once:
                run_id = scheduling.run_id_for_trigger(entry.uid, "once")
                await self._dispatch(
                    entry, queue, run_id=run_id, slot=entry.created, trigger="Schedule", now=now
                )
                entry.dispatched_once = True
            self._submit(entry, _next_run_mutation(entry, None, now))
            return

        await self._backfill(entry, queue, now)

        schedule = entry.schedule
        if entry.spec.suspend:
            # Suspended: slots pass without running and without counting as missed.
            entry.last_slot = scheduling.previous_fire_time(schedule, at_or_before=now)
            nxt = scheduling.next_fire_time(schedule, after=now)
            self._submit(entry, _next_run_mutation(entry, nxt, now))
            if nxt is not None:
                entry.version += 1
                self._push(entry, nxt)
            return

        catch_up = entry.spec.catch_up
        plan = scheduling.plan_catch_up(
            schedule,
            job_uid=entry.uid,
            last_slot=entry.last_slot,
            now=now,
            policy=scheduling.CatchUpPolicy(catch_up.policy),
            window=parse_duration(catch_up.window) if catch_up.window else None,
        )
        if plan.missed:
            self._submit(entry, functools.partial(fold.record_skipped, missed=plan.missed))
        for slot in plan.to_run:
            decision = scheduling.decide_overlap(
                scheduling.ConcurrencyPolicy(entry.spec.concurrency_policy),
                active=entry.active,
                buffered=0,
            )
            if decision.action is scheduling.OverlapAction.SKIP:
                skipped = functools.partial(fold.record_skipped, skipped=decision.skipped)
                self._submit(entry, skipped)
                continue
            if decision.action is scheduling.OverlapAction.REPLACE:
                await self._cancel_active(entry)
            trigger = (
                "Schedule"
                if slot == plan.to_run[-1] and slot >= now - timedelta(seconds=60)
                else "CatchUp"
            )
            run_id = scheduling.run_id_for_slot(entry.uid, slot)
            await self._dispatch(entry, queue, run_id=run_id, slot=slot, trigger=trigger, now=now)
            if scheduling.ConcurrencyPolicy(entry.spec.concurrency_policy) is not (
                scheduling.ConcurrencyPolicy.ALLOW
            ):
                entry.active += 1
        if plan.last_slot is not None:
            entry.last_slot = plan.last_slot
        nxt = scheduling.next_fire_time(schedule, after=max(now, entry.last_slot or now))
        self._submit(entry, _next_run_mutation(entry, nxt, now))
        entry.version += 1
        if nxt is not None:
            self._push(entry, scheduling.dispatch_time(schedule, job_uid=entry.uid, slot=nxt))

    async def _backfill(self, entry: Entry, queue: QueueInfo, now: datetime) -> None:
        backfill = entry.spec.backfill
        if backfill is None or entry.schedule is None:
            return
        marker = f"{_iso(backfill.from_)}/{_iso(backfill.to)}"
        if entry.backfill_done == marker:
            return
        slots = scheduling.backfill_slots(
            entry.schedule, from_=backfill.from_, to=backfill.to, cap=1000
        )
        for slot in slots:
            run_id = scheduling.run_id_for_slot(entry.uid, slot)
            await self._dispatch(
                entry, queue, run_id=run_id, slot=slot, trigger="Backfill", now=now
            )
        entry.backfill_done = marker
        done = {
            "from": _iso(backfill.from_),
            "to": _iso(backfill.to),
            "dispatched": len(slots),
            "completionTime": _iso(now),
        }
        self._submit(entry, lambda s: {**s, "backfill": done})

    async def _dispatch(
        self,
        entry: Entry,
        queue: QueueInfo,
        *,
        run_id: str,
        slot: datetime,
        trigger: str,
        now: datetime,
    ) -> None:
        subject, request = build_request(
            spec=entry.spec,
            job=entry.ref,
            queue=queue,
            run_id=run_id,
            scheduled_at=slot,
            default_bucket=self._settings.output_bucket,
        )
        ack = await self._js.publish(
            subject, encode(request), timeout=10, headers={constants.MSG_ID_HEADER: run_id}
        )
        self.published += 1
        if trigger == "Schedule":
            self.lags.append((self._clock() - now).total_seconds())
        if ack.duplicate:
            logger.debug("run %s of %s/%s was already enqueued", run_id, *entry.key)
        limits = entry.limits
        self._submit(
            entry,
            lambda s: fold.record_dispatch(
                s, run_id=run_id, scheduled_at=slot, trigger=trigger, limits=limits
            ),
        )

    async def _cancel_active(self, entry: Entry) -> None:
        """Replace policy: ask workers to cancel the Job's running attempt (core NATS)."""
        await self._js._nc.publish(  # the JetStream context's connection
            constants.cancel_subject(entry.namespace, entry.name), entry.uid.encode()
        )
        entry.active = 0

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

    def note_finished(self, namespace: str, name: str) -> None:
        """A run of this Job finished (from the result folder): one fewer active run."""
        entry = self._entries.get((namespace, name))
        if entry is not None and entry.active > 0:
            entry.active -= 1


def _set_field(name: str, value: Any, status: Status) -> Status:
    return {**status, name: value}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    suspended = entry.spec.suspend

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


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.info("status write dropped: %s", future.exception())
