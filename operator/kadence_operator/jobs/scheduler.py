"""The scheduler: one loop per operator process over a time-ordered heap of Jobs.

Jobs are not one kopf timer each: every Job is an entry in a heap keyed by its next due time, so
10,000 idle Jobs cost a heap and a dict. The loop sleeps until the earliest due entry (or until a
Job changes), fires the due Jobs whose shard this replica holds, and pushes each back with its next
due time. A fire asks the pure decision (:func:`kadence_operator.jobs.plan.decide`) what to do
and carries out its effects in order: publishes through the
:class:`~kadence_operator.jobs.dispatcher.Dispatcher`, status mutations through the coalesced
status writer, changes to the Job's view (:mod:`kadence_operator.jobs.entry`), its next wake-up.

A Job whose next on-time run could be prepared when its last fire ended (:class:`Armed`) takes
the short path when it is due: a version check (:func:`~kadence_operator.jobs.entry.runs_alone`)
and a publish of the prepared bytes; many due at one instant are prepared just before it and
written at once (:meth:`Scheduler._stage_burst`).

Why this module is longer than the others (~600 lines): the loop, the staged bursts, the armed
path and the fire tasks are one state machine over the same state -- each Job's ``firing`` and
``refire`` flags, the heap, the count of fires in progress that hand-overs wait on -- and every
change to one of them has to be read against the others. What could stand apart has: the
decision (:mod:`.plan`), the Job's view (:mod:`.entry`), the registry (:mod:`.registry`),
publishing and settling acks (:mod:`.dispatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from kadence import constants
from kadence.requests import Prepared, pub_ack
from kadence_operator import scheduling, timefmt
from kadence_operator.api import JobSpec
from kadence_operator.jobs import plan
from kadence_operator.jobs.dispatcher import PUBLISH_TIMEOUT, Dispatcher, ReplySettler
from kadence_operator.jobs.entry import (
    Armed,
    Entry,
    Key,
    adopt_buffered,
    backfill_pending,
    dispatches_now,
    runs_alone,
)
from kadence_operator.jobs.registry import Due, Jobs
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.metrics import OperatorMetrics
from kadence_operator.scheduling.bursts import STAGE_LEAD_MAX, BurstWatch, stage_lead
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import StatusWriter

logger = logging.getLogger(__name__)

#: How many Jobs fire at once (each awaits JetStream's ack of its publish).
FIRE_CONCURRENCY = 4096
#: Fires started later than this (seconds) after they were due are logged at INFO.
SLOW_BATCH = 0.5
#: How long a hand-over waits for the fires in progress to end.
HAND_OVER_WAIT = 5.0
#: Fires due this long after the first of a group are staged with it (and wait for the last).
STAGE_SPAN = timedelta(milliseconds=2)
#: What preparing one staged fire is assumed to cost until it has been measured, seconds.
STAGE_COST = 50e-6


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


class Scheduler:
    """Fires the Jobs of the shards this replica owns."""

    def __init__(
        self,
        *,
        nc: NATS,
        writer: StatusWriter,
        settings: OperatorSettings,
        queues: dict[Key, QueueInfo],
        post_event: Callable[[Key, str, str], Awaitable[None]] | None = None,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._dispatcher = Dispatcher(
            nc=nc, writer=writer, settings=settings, metrics=metrics, clock=clock
        )
        self._requests = self._dispatcher.requests
        self._writer = writer
        self._settings = settings
        self._queues = queues
        self._post_event = post_event
        self._metrics = metrics
        self._clock = clock
        self.jobs = Jobs(
            shards=settings.shards,
            stage_size=settings.dispatch_stage,
            bursts=BurstWatch(quiet=settings.dispatch_quiet, burst=settings.dispatch_burst),
            clock=clock,
        )
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
        #: Replies to armed and staged fires, settled by :meth:`_armed_settled`.
        self._settler = ReplySettler(
            settle=self._armed_settled, outstanding=self._acks_outstanding, clock=clock
        )

    def fence(self, ownership: Callable[[int], bool | None]) -> None:
        """See :meth:`Dispatcher.fence`: the status writes of a shard's Jobs need its hold."""
        self._dispatcher.fence(ownership)

    @property
    def published(self) -> int:
        """Run requests acknowledged by JetStream."""
        return self._dispatcher.published

    @property
    def duplicates(self) -> int:
        """Run requests JetStream acknowledged as duplicates (already enqueued)."""
        return self._dispatcher.duplicates

    # ----------------------------------------------------------------- registry

    def refresh(self, body: dict[str, Any]) -> bool:
        """See :meth:`Jobs.refresh`."""
        return self.jobs.refresh(body)

    def upsert(self, body: dict[str, Any], spec: JobSpec) -> None:
        """See :meth:`Jobs.upsert`."""
        self.jobs.upsert(body, spec)

    def remove(self, namespace: str, name: str) -> None:
        self.jobs.remove(namespace, name)

    def note_finished(self, namespace: str, name: str, run_id: str | None = None) -> None:
        """See :meth:`Jobs.note_finished`."""
        self.jobs.note_finished(namespace, name, run_id)

    def __len__(self) -> int:
        return len(self.jobs.entries)

    @property
    def owned(self) -> frozenset[int]:
        """The shards whose Jobs this replica fires."""
        return self._owned

    async def on_shards(self, owned: frozenset[int]) -> None:
        """Shard ownership changed: look at the Jobs of gained shards now (catch-up)."""
        gained = owned - self._owned
        self._owned = owned
        if gained:
            for entry in self.jobs.entries.values():
                if entry.shard in gained:
                    # What this replica held for the Job when it last fired it is stale: the
                    # status has what the previous holder left (adopt_buffered).
                    entry.buffered, entry.adopt, entry.armed = None, True, None
                    self.jobs.wake_entry(entry)

    async def hand_over(self, shards: frozenset[int]) -> None:
        """Before ``shards`` are released: let running fires end and write their Jobs' status."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HAND_OVER_WAIT):
                await self._quiet.wait()
        await self.flush(shards)

    async def flush(self, shards: frozenset[int]) -> None:
        """Write now what the status writer holds for the Jobs of ``shards``."""
        await self._writer.flush_keys(
            [e.key for e in self.jobs.entries.values() if e.shard in shards]
        )

    def hold_for(self) -> float:
        """Seconds background work (status writes, result folding) should wait now: a burst
        of at least ``dispatch_burst`` fires is due within ``dispatch_quiet`` seconds."""
        first = self.jobs.heap[0].at if self.jobs.heap else None
        if self._stage is not None and (first is None or self._stage.at < first):
            first = self._stage.at  # a staged burst still counts (it is not written yet)
        before = self.jobs.bursts.holds
        wait = self.jobs.bursts.hold(
            now=self._clock().timestamp(),
            mono=time.monotonic(),
            first=first.timestamp() if first is not None else None,
        )
        if self.jobs.bursts.holds != before and self._metrics is not None:
            self._metrics.dispatch_holds.inc()
        return wait

    def _acks_outstanding(self) -> bool:
        """Whether a burst's worth of publishes (``dispatch_stage``) still waits for acks."""
        return self._requests.pending >= max(1, self._settings.dispatch_stage)

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
            while self.jobs.heap and self.jobs.heap[0].at <= now:
                due = heapq.heappop(self.jobs.heap)
                self.jobs.bursts.remove(due.at.timestamp())
                earliest = due.at if earliest is None else earliest
                entry = self.jobs.entries.get(due.key)
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
            self.jobs.wake.clear()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.jobs.wake.wait(), timeout=timeout)
            else:
                await asyncio.sleep(0)  # let the fires just started run

    def _next_wake(self) -> float:
        """Seconds until the loop has something to do: the next fire, the next staged write,
        or the moment to start staging the next burst."""
        now = self._clock()
        wake = 1.0
        if self.jobs.heap:
            first = self.jobs.heap[0].at
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
        count = self.jobs.bursts.due_at(first.timestamp())
        return stage_lead(count, self._stage_cost) if count >= size else 0.0

    async def _stage_burst(self, now: datetime) -> None:
        """Prepare the burst due next, if one is due within its lead.

        A thousand Jobs due at the same second cost the loop about 20-50 µs each to check and
        encode: done when they are due, the last run would leave tens of milliseconds late. So
        when at least ``dispatch_stage`` fires are due at one instant, the loop does that work
        just before it -- each armed fire that runs alone is checked and its request encoded
        (:meth:`Requests.prepare`) -- and at the instant writes them in one piece
        (:meth:`_write_stage`), after checking again, cheaply, that nothing changed. Nothing
        is published before it is due. The Jobs stay "firing" while staged: a watch event that
        would look at one again marks it for another look, which makes it take the full path.
        """
        if not self.jobs.heap:
            return
        first = self.jobs.heap[0].at
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
        others: list[Due] = []
        at = first
        while self.jobs.heap and self.jobs.heap[0].at <= limit:
            due = heapq.heappop(self.jobs.heap)
            entry = self.jobs.entries.get(due.key)
            if entry is None or entry.version != due.version:
                self.jobs.bursts.remove(due.at.timestamp())
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
                    timeout=PUBLISH_TIMEOUT,
                    headers={constants.MSG_ID_HEADER: armed.run_id},
                )
            except Exception:
                self.jobs.bursts.remove(due.at.timestamp())
                self._fire_failed(entry, now)
                self._fire_ended(entry)
                continue
            staged.append(_StagedFire(entry, armed, request, due.at, entry.stamp))
            queues[(entry.namespace, entry.queue_name)] = armed.queue
            at = max(at, due.at)
        for due in others:
            heapq.heappush(self.jobs.heap, due)
        if staged:
            windows = [scheduling.runs_alone_during(fire.armed.planned) for fire in staged]
            alone = (max(w[0] for w in windows), min(w[1] for w in windows))
            self._stage = _Stage(at, staged, queues, owned, alone)
            cost = (time.perf_counter() - started) / len(staged)
            self._stage_cost = 0.5 * self._stage_cost + 0.5 * cost
            logger.debug("staged %d fire(s) due %s", len(staged), _iso(at))

    async def _write_stage(self, now: datetime) -> None:
        """Publish the staged burst, now due: those whose Job did not change, in one write
        (each run is a publish of its own, answered by its own ``PubAck``)."""
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
            ready: list[_StagedFire] = []
            for fire in fires:
                entry = fire.entry
                if (at_once and entry.stamp == fire.stamp and not entry.refire) or self._unchanged(
                    fire, now, changed
                ):
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
                    functools.partial(self._settler.acked, fire.entry, fire.armed, now)
                )
            sent = len(ready)
        except Exception:
            unsent = [fire for fire in fires if not fire.done]
            logger.exception("publishing %d staged run(s) failed; retrying in 5s", len(unsent))
            for fire in unsent:
                self._requests.discard(fire.request)
                fire.entry.refire = False
                self.jobs.push(fire.entry, now + timedelta(seconds=5))
                self._fire_ended(fire.entry)
        finally:
            for fire in fires:  # counted until now, for the holds
                self.jobs.bursts.remove(fire.due.timestamp())
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
            or self.jobs.entries.get(entry.key) is not entry
            or entry.shard not in self._owned
            or entry.generation != armed.generation
            or not scheduling.runs_alone(armed.planned, last_slot=entry.last_slot, now=now)
            or (changed and (entry.namespace, entry.queue_name) in changed)
        ):
            return False
        return dispatches_now(entry)

    def _drop_stage(self) -> None:
        """The loop is stopping: the staged fires are not published."""
        stage, self._stage = self._stage, None
        for fire in stage.fires if stage is not None else []:
            self.jobs.bursts.remove(fire.due.timestamp())
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
        self.jobs.push(entry, now + timedelta(seconds=5))

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
            self.jobs.push(entry, self._clock())

    def _runs_alone(self, entry: Entry, armed: Armed, now: datetime) -> bool:
        queue = self._queues.get((entry.namespace, entry.queue_name))
        return runs_alone(entry, armed, queue, now)

    async def _fire_armed(self, entry: Entry, armed: Armed, now: datetime) -> None:
        """Publish the armed run; :class:`ReplySettler` does the rest once JetStream acks it."""
        self._fire_started(entry)
        try:
            acked = await self._requests.send(
                armed.subject,
                armed.payload,
                timeout=PUBLISH_TIMEOUT,
                headers={constants.MSG_ID_HEADER: armed.run_id},
            )
        except Exception:
            self._fire_failed(entry, now)
            self._fire_ended(entry)
            return
        acked.add_done_callback(functools.partial(self._settler.acked, entry, armed, now))

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
                self.jobs.push(entry, now + timedelta(seconds=5))
                return
            planned = armed.planned
            run = plan.Publish(armed.run_id, planned.slot, "Schedule", planned.due)
            self._dispatcher.published_run(entry, pub_ack(reply.result()), run, acked=acked)
            entry.last_slot = planned.slot
            assert entry.schedule is not None
            for effect in plan.plan_next(
                entry,
                entry.schedule,
                now,
                last_slot=entry.last_slot,
                plan_now=now,
                arm=not backfill_pending(entry),
            ):
                self._apply(entry, effect)
        except Exception:
            self._fire_failed(entry, now)
        finally:
            self._fire_ended(entry)

    async def _fire(self, entry: Entry, now: datetime) -> None:
        queue = self._queues.get((entry.namespace, entry.queue_name))
        if entry.adopt:
            adopt_buffered(entry)
        decided = plan.decide(entry, queue, now)
        try:
            for effect in decided.effects:
                if isinstance(effect, plan.Publish):
                    assert queue is not None
                    await self._dispatcher.publish(entry, queue, effect)
                elif isinstance(effect, plan.Cancel):
                    await self._dispatcher.cancel(entry)
                elif isinstance(effect, plan.Warn):
                    if self._post_event is not None:
                        await self._post_event(entry.key, effect.reason, effect.message)
                else:
                    self._apply(entry, effect)
        finally:
            for effect in decided.always:
                self._apply(entry, effect)

    def _apply(self, entry: Entry, effect: plan.Effect) -> None:
        """Carry out an effect that does no I/O of its own."""
        if isinstance(effect, plan.Post):
            self._dispatcher.submit(entry, effect.mutation, supersede=effect.supersede)
        elif isinstance(effect, plan.Update):
            setattr(entry, effect.field, effect.value)
        elif isinstance(effect, plan.Wake):
            self.jobs.push(entry, effect.at)
        elif isinstance(effect, plan.Arm):
            self._dispatcher.arm(entry, effect)
        elif isinstance(effect, plan.Count):
            self._dispatcher.count(effect.reason, effect.amount)
            if effect.reason == "missed":
                logger.info(
                    "%s/%s: %d slot(s) missed since %s (catchUp %s)",
                    entry.namespace,
                    entry.name,
                    effect.amount,
                    _iso(entry.last_slot) if entry.last_slot else "creation",
                    entry.catch_up.value,
                )
        elif isinstance(effect, plan.ForgetTemplate):
            entry.template = entry.template_queue = entry.job_ref = None
        else:
            raise TypeError(f"{effect!r} needs I/O; the fire carries it out")


_iso = timefmt.rfc3339
