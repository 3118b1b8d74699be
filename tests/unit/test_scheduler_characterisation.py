"""A characterisation table of the scheduler: what it publishes and what it writes to a Job's
status, today.

It pins the observable behaviour of :class:`~kadence_operator.jobs.scheduler.Scheduler` before
``jobs/scheduler.py`` is split into a pure core and a thin executor: the same table must pass
after every step of that restructuring. A row that fails means behaviour changed. If the change
is meant, edit that row's record in :data:`GOLDEN` by hand, in the same commit, and say why; the
records are literal data, and there is deliberately no switch that rewrites them. Some records
pin behaviour that looks wrong (the ``NB`` comments in :data:`ROWS`): pinned so that the
restructuring does not change it silently, not endorsed.

Each row drives the real scheduler through the calls the operator makes on it -- the
constructor, ``upsert``/``refresh`` (the Job watch handler), ``on_shards``/``hand_over`` (the
shard Leases), ``note_finished`` (the results consumer), ``run`` -- among stand-ins:

* Time is virtual: the event loop never sleeps, it jumps to its next timer, and the scheduler's
  clock reads the same time, so a two-day gap costs nothing and every run is deterministic.
* NATS: each replica's connection (nats-py's client, as :class:`kadence.requests.Requests` and the
  Replace cancels use it) hands run requests to one JetStream stand-in, which stores each
  ``Nats-Msg-Id`` once and can be made to fail (:class:`FakeNats`).
* Kubernetes: the API server holds the Job; each replica's status writer applies what the
  scheduler posted once a second, after which every replica gets the watch event.
* A worker runs what the stream stores and reports the results, folded as the results consumer
  folds them; it honours Replace's cancel requests.

The rows cross schedule kinds (interval, cron in a time zone across DST, one-shot),
``concurrencyPolicy`` with a run still active, ``catchUp`` after an operator gap, triggers (the
annotation, backfill), NATS outages, shard moves between replicas, restarts, spec changes and
Queue readiness. Each records, times as offsets from :data:`T0` (``+[Nd]HH:MM:SS``):

* ``published``: every run request that reached JetStream, in order: when (to the second), by
  which replica, which run (``slot@<slot>`` when its id is that slot's run id,
  ``trigger:<value>@<scheduledAt>`` for a trigger's), the trigger its status record names,
  the partition and what JetStream did with it;
* ``cancels`` (Replace), ``events`` (Kubernetes Events), ``acks`` (the scheduler's counters of
  acknowledged publishes), snapshots of the status taken mid-way;
* ``status``: the Job's status when the replicas have stopped: counters, active runs, every run
  (history limits of 100) with its trigger and state, ``lastScheduleTime``, ``nextRunTime``,
  the conditions' type, status and reason, and the rest the scheduler writes.

Not covered here: bursts of many Jobs (staging groups, holds:
``test_scheduler_stage.py`` drives those), the real status writer's conflicts and retries, a
Job deleted and created again under its name, and the scheduler's ``time.monotonic`` TTLs (120 s
for a published run the status never lists, 60 s for an ended one), which run on real time.
"""

from __future__ import annotations

import asyncio
import json
import math
import selectors
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg

from kadence import constants
from kadence.protocol import RunRequest, RunResult, RunState, decode_cancel, decode_run
from kadence_operator import scheduling
from kadence_operator.api import TRIGGER_ANNOTATION
from kadence_operator.api.validation import parse_job
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.jobs.scheduler import Scheduler
from kadence_operator.results import fold
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Guard, Mutation, Status

Outcome = dict[str, Any]

# ------------------------------------------------------------------------------- virtual time

#: The instant the Job is created: 08:58 in New York on the day before DST starts there.
T0 = datetime(2026, 3, 7, 13, 58, tzinfo=UTC)
NAMESPACE, JOB, QUEUE = "ns", "job", "q"
UID = "6f1c2a3e-0000-4000-8000-characterise"
SHARDS = 4
SHARD = scheduling.shard_for(UID, SHARDS)
ALL_SHARDS = frozenset(range(SHARDS))
OTHER_SHARDS = ALL_SHARDS - {SHARD}
SETTINGS = OperatorSettings(
    operator_id="characterisation",
    shards=SHARDS,
    dispatch_stage=16,
    output_bucket="out",
)
#: How long JetStream takes to answer a publish.
REPLY_LATENCY = 0.002
#: Status writes land (and their watch events come) once a second, at this phase, away from
#: the whole seconds at which slots and retries fall, so that no outcome hangs on which of two
#: things due at one instant the event loop runs first.
STATUS_INTERVAL = 1.0
STATUS_PHASE = 0.437
#: How long a worker takes to report a run cancelled after the cancel request.
CANCEL_LATENCY = 0.5


class VirtualTime:
    """Microseconds since :data:`T0`, advanced only when the event loop would sleep."""

    def __init__(self) -> None:
        self.us = 0

    def advance(self, seconds: float) -> None:
        self.us += max(1, math.ceil(seconds * 1_000_000))

    def now(self) -> datetime:
        return T0 + timedelta(microseconds=self.us)


class _VirtualSelector(selectors.SelectSelector):
    """Never blocks: when nothing is ready, time jumps to the event loop's next timer."""

    def __init__(self, clock: VirtualTime) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("the scenario is stuck: nothing is scheduled")
        self._clock.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.virtual = VirtualTime()
        super().__init__(_VirtualSelector(self.virtual))

    def time(self) -> float:
        return self.virtual.us / 1_000_000


def run_virtual(coro: Coroutine[Any, Any, Outcome]) -> Outcome:
    """Run ``coro`` to its end in virtual time; cancel whatever it left behind."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover))
        loop.close()


def second(moment: datetime) -> str:
    """:func:`offset` to the whole second: when something happened, not how many milliseconds
    the stand-ins took (publishes awaited one after the other are 2 ms apart)."""
    return offset(moment.replace(microsecond=0))


def rel(moment: datetime | str | None) -> str | None:
    """A time (or a status field's RFC 3339 string) as an :func:`offset`; None stays None."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return offset(moment)


def offset(moment: datetime) -> str:
    """``moment`` as an offset from :data:`T0`: ``+[Nd]HH:MM:SS[.mmm]``."""
    delta = moment - T0
    sign = "-" if delta < timedelta(0) else "+"
    delta = abs(delta)
    days, rest = divmod(delta, timedelta(days=1))
    ms = rest // timedelta(milliseconds=1)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    text = f"{sign}{f'{days}d' if days else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return text + (f".{ms:03d}" if ms else "")


# ---------------------------------------------------------------------------- NATS stand-ins


@dataclass
class Attempt:
    """One run request the scheduler handed to NATS."""

    at: datetime
    replica: str
    run: RunRequest
    partition: int
    outcome: str


class FakeNats:
    """JetStream as the scheduler sees it: stores each ``Nats-Msg-Id`` once and answers with a
    ``PubAck`` (``duplicate`` for one seen before), unless an outage is on:

    * ``no-ack``: the request is not answered (nats-py buffers it while it reconnects); it
      times out after the scheduler's 10 s.
    * ``no-stream``: no stream answers (``503``, as when JetStream is down).
    * ``refused``: the connection refuses the publish at once (closed).
    * ``ack-lost``: the stream stores the run but its answer is lost (times out).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.mode = "up"
        self.stored: dict[str, int] = {}
        self.attempts: list[Attempt] = []
        self.cancels: list[str] = []

    def receive(
        self,
        conn: FakeConnection,
        subject: str,
        payload: bytes,
        reply: str,
        headers: dict[str, str] | None,
    ) -> None:
        now = self.world.now()
        if subject.startswith("kadence-cancel."):
            if self.mode == "refused":
                self.cancels.append(f"{second(now)} {conn.replica} refused")
                raise nats.errors.ConnectionClosedError
            request = decode_cancel(payload)
            slots = {a.run.run_id: a.run.scheduled_at for a in self.attempts}
            labels = [self.world.run_label(r, slots.get(r)) for r in request.run_ids]
            self.cancels.append(f"{second(now)} {conn.replica} {' '.join(labels)}")
            self.world.worker.cancel(request.run_ids)
            return
        run = decode_run(payload)
        assert (headers or {}).get(constants.MSG_ID_HEADER) == run.run_id
        partition = int(subject.rsplit(".", 1)[1])
        if self.mode == "refused":
            self.attempts.append(Attempt(now, conn.replica, run, partition, "refused"))
            raise nats.errors.ConnectionClosedError
        if self.mode == "no-stream":
            self.attempts.append(Attempt(now, conn.replica, run, partition, "no-stream"))
            conn.answer(reply, b"", {"Status": "503"})
            return
        if self.mode == "no-ack":
            self.attempts.append(Attempt(now, conn.replica, run, partition, "no-ack"))
            return
        duplicate = run.run_id in self.stored
        if not duplicate:
            self.stored[run.run_id] = len(self.stored) + 1
            self.world.worker.take(run)
        outcome = "duplicate" if duplicate else "stored"
        if self.mode == "ack-lost":
            self.attempts.append(Attempt(now, conn.replica, run, partition, outcome + ",ack-lost"))
            return
        self.attempts.append(Attempt(now, conn.replica, run, partition, outcome))
        ack: dict[str, Any] = {"stream": "KADENCE", "seq": self.stored[run.run_id]}
        if duplicate:
            ack["duplicate"] = True
        conn.answer(reply, json.dumps(ack).encode(), None)


class FakeConnection:
    """One replica's NATS connection: what :class:`kadence.requests.Requests` and the cancels
    use of nats-py's client."""

    def __init__(self, server: FakeNats, replica: str) -> None:
        self.server = server
        self.replica = replica
        self.closed = False
        self._subs: dict[str, Callable[[Msg], Awaitable[None]]] = {}
        self._inboxes = 0
        self.stats = {"out_msgs": 0, "out_bytes": 0}
        self._relays: set[asyncio.Future[None]] = set()

    def new_inbox(self) -> str:
        self._inboxes += 1
        return f"_INBOX.{self.replica}{self._inboxes}"

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> object:
        self._subs[subject] = cb
        return object()

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.closed:
            raise nats.errors.ConnectionClosedError
        self.server.receive(self, subject, payload, reply, headers)

    # What Requests.write (the staged path, through kadence._nats.write_now) uses of nats-py's
    # client: the protocol bytes of a burst go straight to the transport, read back here as the
    # publishes they are.

    @property
    def is_closed(self) -> bool:
        return self.closed or self.server.mode == "refused"

    @property
    def is_connected(self) -> bool:
        return not self.is_closed

    is_draining_pubs = False
    _max_pending_size = 0
    pending_data_size = 0

    @property
    def _transport(self) -> FakeConnection:
        return self

    def write(self, data: bytes) -> None:
        while data:
            line, _, data = data.partition(b"\r\n")
            op, subject, reply, *sizes = line.decode().split(" ")
            size = int(sizes[-1])
            block, data = data[:size], data[size + 2 :]
            headers = None
            if op == "HPUB":
                head, block = block[: int(sizes[0])], block[int(sizes[0]) :]
                lines = head.decode().split("\r\n")[1:]
                headers = dict(h.split(": ", 1) for h in lines if h)
            self.server.receive(self, subject, block, reply, headers)

    def answer(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        def deliver() -> None:
            if self.closed:
                return
            callback = self._subs[subject.rpartition(".")[0] + ".*"]
            msg = Msg(self, subject=subject, data=data, headers=headers)  # type: ignore[arg-type]
            task = asyncio.ensure_future(callback(msg))  # the subscription's relay
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

        asyncio.get_running_loop().call_later(REPLY_LATENCY, deliver)


# --------------------------------------------------------------------- Kubernetes stand-ins


@dataclass
class JobObject:
    """The Job as the API server holds it."""

    spec: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    status: Status = field(default_factory=dict)
    generation: int = 1
    resource_version: int = 1

    def body(self) -> dict[str, Any]:
        """A watch event's body (a copy, as each event is)."""
        meta = {
            "namespace": NAMESPACE,
            "name": JOB,
            "uid": UID,
            "generation": self.generation,
            "resourceVersion": str(self.resource_version),
            "creationTimestamp": T0.isoformat().replace("+00:00", "Z"),
            "annotations": dict(self.annotations),
        }
        body = {"metadata": meta, "spec": self.spec, "status": self.status}
        copied: dict[str, Any] = json.loads(json.dumps(body))
        return copied


class FakeWriter:
    """One replica's status writer: mutations wait for the next write (each ``STATUS_INTERVAL``,
    see :meth:`World.tick`), a ``supersede`` tag replacing its pending predecessor, as
    :class:`~kadence_operator.statuswriter.StatusWriter` does."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.alive = True
        self.pending: list[tuple[Mutation, str | None]] = []

    def post(
        self,
        namespace: str,
        name: str,
        mutation: Mutation,
        *,
        uid: str | None = None,
        supersede: str | None = None,
        guard: Guard | None = None,
    ) -> None:
        assert (namespace, name, uid) == (NAMESPACE, JOB, UID)
        assert guard is None  # no shard Leases here: the scheduler is not fenced
        if not self.alive:
            return  # the process is gone
        if supersede is not None:
            self.pending = [(m, tag) for m, tag in self.pending if tag != supersede]
        self.pending.append((mutation, supersede))

    async def flush_keys(self, keys: Iterable[tuple[str, str]]) -> None:
        self.flush()
        self.world.watch()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        status = self.world.job.status
        for mutation, _ in pending:
            status = mutation(status)
        self.world.write_status(status)


class Worker:
    """Runs what the Queue's stream stores: each run ends ``Succeeded`` after its duration
    (the i-th run stored lasts ``durations[i]``, the others ``default``; None: never ends by
    itself), or ``Cancelled`` shortly after a cancel request names it."""

    def __init__(self, world: World, durations: tuple[float | None, ...], default: float | None):
        self.world = world
        self.durations = durations
        self.default = default
        self.taken = 0
        self.running: dict[str, tuple[RunRequest, asyncio.TimerHandle | None]] = {}

    def take(self, run: RunRequest) -> None:
        duration = self.durations[self.taken] if self.taken < len(self.durations) else self.default
        self.taken += 1
        loop = asyncio.get_running_loop()
        timer = None
        if duration is not None:
            timer = loop.call_later(duration, self.end, run.run_id, RunState.SUCCEEDED)
        self.running[run.run_id] = (run, timer)

    def cancel(self, run_ids: tuple[str, ...]) -> None:
        for run_id in run_ids:
            if run_id in self.running:
                _, timer = self.running[run_id]
                if timer is not None:
                    timer.cancel()
                asyncio.get_running_loop().call_later(
                    CANCEL_LATENCY, self.end, run_id, RunState.CANCELLED
                )

    def end(self, run_id: str, state: RunState) -> None:
        found = self.running.pop(run_id, None)
        if found is None:
            return
        run = found[0]
        now = self.world.now()
        self.world.report(
            RunResult(
                run_id=run_id,
                attempt=1,
                job=run.job,
                state=state,
                scheduled_at=run.scheduled_at,
                trigger=run.trigger,
                started_at=now,
                finished_at=now,
                worker="w",
            )
        )


# ----------------------------------------------------------------------------------- world


@dataclass
class Replica:
    name: str
    scheduler: Scheduler
    writer: FakeWriter
    conn: FakeConnection
    stop: asyncio.Event
    task: asyncio.Task[None]
    owned: frozenset[int]


class World:
    """One Job, its Queue, JetStream, a worker and the operator replicas that schedule it."""

    def __init__(self, row: Row) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        self.clock = loop.virtual
        self.settings = row.settings()
        self.job = JobObject(spec=row.spec(), annotations=dict(row.annotations))
        self.nats = FakeNats(self)
        self.worker = Worker(self, row.durations, row.default_duration)
        self.queues = {(NAMESPACE, QUEUE): queue_info(row.queue_ready)}
        self.replicas: list[Replica] = []
        self.events: list[str] = []
        self.results: list[RunResult] = []
        self.triggers = {"once", *row.annotations.values()}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.acks = [0, 0]
        self._ticker: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return self.clock.now()

    # -- the API server

    def write_status(self, status: Status) -> None:
        """A status PATCH (none when nothing changed)."""
        if status != self.job.status:
            self.job.status = json.loads(json.dumps(status))
            self.job.resource_version += 1

    def watch(self) -> None:
        """Every replica gets a watch event of the Job, as the operator's handler takes it."""
        for replica in self.replicas:
            body = self.job.body()
            if not replica.scheduler.refresh(body):
                replica.scheduler.upsert(body, parse_job(body))

    async def tick(self) -> None:
        """The status writers' interval: write what is pending, then the watch events."""
        period, phase = round(STATUS_INTERVAL * 1e6), round(STATUS_PHASE * 1e6)
        while True:
            now = self.clock.us
            await asyncio.sleep((period - (now - phase) % period) / 1e6)
            before = self.job.resource_version
            for replica in self.replicas:
                replica.writer.flush()
            if self.job.resource_version != before:
                self.watch()

    def report(self, result: RunResult) -> None:
        """A worker's final result: folded into the status (persisted), then the replica that
        consumed it (the first one up) is told, as the operator's results consumer does."""
        if not self.replicas:
            self.results.append(result)  # waits in the results stream
            return
        outcome = fold.fold_result(
            self.job.status,
            result,
            limits=(100, 100),
            generation=self.job.generation,
            now=self.now(),
        )
        self.write_status(outcome.status)
        self.replicas[0].scheduler.note_finished(NAMESPACE, JOB, result.run_id)
        self.watch()

    # -- operator replicas

    async def up(self, name: str, owned: frozenset[int]) -> None:
        conn = FakeConnection(self.nats, name)
        writer = FakeWriter(self)

        async def post_event(key: tuple[str, str], reason: str, message: str) -> None:
            if writer.alive:
                self.events.append(f"{second(self.now())} {name} {reason}: {message}")

        scheduler = Scheduler(
            writer=writer,  # type: ignore[arg-type]
            settings=self.settings,
            queues=self.queues,
            nc=conn,  # type: ignore[arg-type]
            post_event=post_event,
            clock=self.now,
        )
        await scheduler.on_shards(owned)
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        self.replicas.append(Replica(name, scheduler, writer, conn, stop, task, owned))
        if self._ticker is None:
            self._ticker = asyncio.create_task(self.tick())
        body = self.job.body()
        scheduler.upsert(body, parse_job(body))
        results, self.results = self.results, []
        for result in results:
            self.report(result)

    async def down(self, name: str) -> None:
        """Stop a replica cleanly: its loop ends, its writer writes what is pending."""
        replica = self.replica(name)
        replica.stop.set()
        await replica.task
        replica.writer.flush()
        self._gone(replica)
        self.watch()

    async def crash(self, name: str) -> None:
        """Kill a replica: nothing more of it reaches NATS or the API server, and its pending
        status writes are lost."""
        replica = self.replica(name)
        self._gone(replica)
        replica.task.cancel()

    def _gone(self, replica: Replica) -> None:
        replica.writer.alive = False
        replica.conn.closed = True
        self.acks[0] += replica.scheduler.published
        self.acks[1] += replica.scheduler.duplicates
        self.replicas.remove(replica)
        if not self.replicas and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    # -- the record

    def label_of(self, run_id: str) -> str:
        for value in sorted(self.triggers):
            if run_id == scheduling.run_id_for_trigger(UID, value):
                return f"trigger:{value}"
        return run_id  # slot runs are checked against their slot in :meth:`run_label`

    def run_label(self, run_id: str, slot: datetime | str | None) -> str:
        if isinstance(slot, str):
            slot = datetime.fromisoformat(slot.replace("Z", "+00:00"))
        if slot is not None and run_id == scheduling.run_id_for_slot(UID, slot):
            return f"slot@{rel(slot)}"
        label = self.label_of(run_id)
        return f"{label}@{rel(slot)}"

    def summary(self) -> dict[str, Any]:
        status = self.job.status
        runs = status.get("runs") or []
        summary: dict[str, Any] = {
            "counters": {k: v for k, v in (status.get("counters") or {}).items() if v},
            "active": [
                self.run_label(a["runId"], a.get("scheduledAt")) for a in status.get("active") or []
            ],
            "runs": [
                f"{self.run_label(r['runId'], r.get('scheduledAt'))}"
                f" {r.get('trigger') or 'no-trigger'} {r['state']}"
                for r in runs
            ],
            "lastScheduleTime": rel(status.get("lastScheduleTime")),
            "nextRunTime": rel(status.get("nextRunTime")),
            "conditions": sorted(
                f"{c['type']}={c['status']} {c['reason']}" for c in status.get("conditions") or []
            ),
        }
        for key in ("lastTrigger", "observedGeneration"):
            if key in status:
                summary[key] = status[key]
        if "backfill" in status:
            b = status["backfill"]
            summary["backfill"] = (
                f"[{rel(b['from'])}, {rel(b['to'])}) dispatched {b['dispatched']}"
                f" at {rel(b.get('completionTime'))}"
            )
        return summary

    def outcome(self) -> Outcome:
        triggers = {r["runId"]: r.get("trigger") for r in self.job.status.get("runs") or []}
        published = [
            f"{second(a.at)} {a.replica} {self.run_label(a.run.run_id, a.run.scheduled_at)}"
            f" {triggers.get(a.run.run_id, 'unrecorded') or 'no-trigger'} p{a.partition}"
            f" {a.outcome}"
            for a in self.nats.attempts
        ]
        outcome: Outcome = {"published": published}
        if self.nats.cancels:
            outcome["cancels"] = self.nats.cancels
        if self.events:
            outcome["events"] = self.events
        outcome["acks"] = f"{self.acks[0]} acked, {self.acks[1]} duplicates"
        outcome.update(self.snapshots)
        outcome["status"] = self.summary()
        return outcome


#: Something that happens to the world at a row's step.
Action = Callable[[World], Awaitable[None]]


# ---------------------------------------------------------------------------------- actions


def down(name: str = "r0") -> Action:
    async def act(world: World) -> None:
        await world.down(name)

    return act


def crash(name: str = "r0") -> Action:
    async def act(world: World) -> None:
        await world.crash(name)

    return act


def up(name: str = "r0", owned: frozenset[int] = ALL_SHARDS) -> Action:
    async def act(world: World) -> None:
        await world.up(name, owned)

    return act


def nats_mode(mode: str) -> Action:
    async def act(world: World) -> None:
        world.nats.mode = mode

    return act


def shards(name: str, owned: frozenset[int], *, hand_over: bool = False) -> Action:
    """A replica's shards change: a planned move hands the lost ones over first (their fires
    end and their status is written), a lost Lease does not."""

    async def act(world: World) -> None:
        replica = world.replica(name)
        if hand_over:
            await replica.scheduler.hand_over(replica.owned - owned)
        replica.owned = owned
        await replica.scheduler.on_shards(owned)

    return act


def annotate(value: str) -> Action:
    async def act(world: World) -> None:
        world.triggers.add(value)
        world.job.annotations[TRIGGER_ANNOTATION] = value
        world.job.resource_version += 1
        world.watch()

    return act


def patch_spec(**changes: Any) -> Action:
    async def act(world: World) -> None:
        world.job.spec = {**world.job.spec, **changes}
        world.job.generation += 1
        world.job.resource_version += 1
        world.watch()

    return act


def queue_info(ready: bool) -> QueueInfo:
    return QueueInfo(NAMESPACE, QUEUE, 4, 30.0, ready, "" if ready else "stream missing")


def queue_ready(ready: bool) -> Action:
    async def act(world: World) -> None:
        world.queues[(NAMESPACE, QUEUE)] = queue_info(ready)

    return act


def snapshot(label: str) -> Action:
    async def act(world: World) -> None:
        world.snapshots[label] = world.summary()

    return act


# ------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    id: str
    #: The Job's spec beyond queue, task and history limits.
    spec_extra: dict[str, Any]
    #: (seconds after T0, action), in order.
    steps: tuple[tuple[float, Action], ...] = ()
    #: When the scenario ends (the replicas are then stopped cleanly).
    end: float = 210.0
    annotations: dict[str, str] = field(default_factory=dict)
    #: How long the worker takes for the i-th run it gets, and for the others (None: forever).
    durations: tuple[float | None, ...] = ()
    default_duration: float | None = 20.0
    queue_ready: bool = True
    #: JetStream's state at T0 (see :class:`FakeNats`).
    nats: str = "up"
    #: Stage on-time fires (``dispatch_stage: 1``: every armed fire takes the staged path).
    staged: bool = False
    #: The replicas started at T0 and the shards each owns.
    start: tuple[tuple[str, frozenset[int]], ...] = (("r0", ALL_SHARDS),)

    def spec(self) -> dict[str, Any]:
        return {
            "queue": QUEUE,
            "task": "t",
            "historyLimits": {"succeeded": 100, "failed": 100},
            **self.spec_extra,
        }

    def settings(self) -> OperatorSettings:
        return SETTINGS.model_copy(update={"dispatch_stage": 1}) if self.staged else SETTINGS


async def play(row: Row) -> Outcome:
    world = World(row)
    world.nats.mode = row.nats
    for name, owned in row.start:
        await world.up(name, owned)
    for at, action in (*row.steps, (row.end, None)):
        delay = at - world.clock.us / 1_000_000
        assert delay >= 0, f"step at {at}s comes after the previous one ended"
        await asyncio.sleep(delay)
        if action is not None:
            await action(world)
    for replica in list(world.replicas):
        await world.down(replica.name)
    return world.outcome()


def iso(seconds: float) -> str:
    """T0 + ``seconds`` as RFC 3339."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def every(interval: str, **schedule: Any) -> dict[str, Any]:
    return {"schedule": {"interval": interval, **schedule}}


CRON_9AM_NEW_YORK = {"schedule": {"cron": "0 9 * * *", "timeZone": "America/New_York"}}
DAY = 86_400.0
POLICIES = ("Allow", "Forbid", "BufferOne", "Replace")
CATCH_UPS = ("None", "One", "All")

ROWS: list[Row] = [
    # --- schedule kinds, nothing in the way (every run takes 20 s)
    Row("kind=interval-1m", every("1m")),
    Row("kind=interval-1m/staged", every("1m"), staged=True),
    # NB: the new Job's first run is for the slot a minute *before* its creation (slot -1m),
    # published at once: the creation slot's dispatch time is delayed by the spread, so the
    # first fire plans at "just before the slot" and finds the previous slot on time.
    Row("kind=interval-1m/spread-hash+jitter-10s", every("1m", spread="hash", jitter="10s")),
    Row("kind=interval-1m/endAt+2m", every("1m", endAt=iso(120))),
    Row(
        "kind=interval-1m/suspended-1m30-to-3m30",
        every("1m"),
        steps=((90, patch_spec(suspend=True)), (210, patch_spec(suspend=False))),
        end=330,
    ),
    # 09:00 New York is 14:00Z today, 13:00Z from tomorrow on (DST starts).
    Row("kind=cron-9am-New_York", CRON_9AM_NEW_YORK),
    Row("kind=one-shot/restarted", {}, steps=((30, down()), (60, up())), end=90),
    # --- concurrencyPolicy while the first run is still active (it takes 150 s, the others 20 s)
    *(
        Row(
            f"policy={policy}/run-active{'/staged' if staged else ''}",
            {**every("1m"), "concurrencyPolicy": policy},
            durations=(150,),
            end=330,
            staged=staged,
        )
        for policy in POLICIES
        for staged in (False, True)
    ),
    # --- catchUp after the operator was down from 1m to 9m30 (every 2m: 2m, 4m, 6m and 8m
    # pass; 8m is 90 s late, later than the 60 s grace) or to 8m30 (8m is on time)
    *(
        Row(
            f"catchUp={catch_up}/operator-gap/newest-{'late' if late else 'on-time'}",
            {**every("2m"), "catchUp": {"policy": catch_up}},
            steps=((60, down()), (570 if late else 510, up())),
            end=690,
        )
        for catch_up in CATCH_UPS
        for late in (True, False)
    ),
    Row(
        "catchUp=All+window-5m/operator-gap/newest-late",
        {**every("2m"), "catchUp": {"policy": "All", "window": "5m"}},
        steps=((60, down()), (570, up())),
        end=690,
    ),
    *(
        Row(
            f"catchUp=All/operator-gap/{policy}-run-active",
            {**every("2m"), "catchUp": {"policy": "All"}, "concurrencyPolicy": policy},
            steps=((60, down()), (570, up())),
            durations=(None,),
            end=690,
        )
        for policy in ("Forbid", "BufferOne", "Replace")
    ),
    # down after today's run, up two days later at 14:28Z: tomorrow's and today's 13:00Z late
    *(
        Row(
            f"catchUp={catch_up}/operator-gap/cron-9am-New_York-over-DST",
            {**CRON_9AM_NEW_YORK, "catchUp": {"policy": catch_up}},
            steps=((210, down()), (2 * DAY + 1800, up())),
            end=2 * DAY + 1920,
        )
        for catch_up in CATCH_UPS
    ),
    # --- triggers
    # NB (Forbid-run-active): a manual trigger runs whatever the concurrencyPolicy.
    Row(
        "trigger=annotation/interval/restarted",
        every("1m"),
        steps=((30, annotate("one")), (90, annotate("two")), (100, down()), (130, up())),
    ),
    Row(
        "trigger=annotation/suspended",
        {**every("1m"), "suspend": True},
        steps=((30, annotate("go")),),
        end=150,
    ),
    Row(
        "trigger=annotation/one-shot",
        {},
        annotations={TRIGGER_ANNOTATION: "first"},
        steps=((60, annotate("second")),),
        end=120,
    ),
    Row(
        "trigger=annotation/Forbid-run-active",
        {**every("1m"), "concurrencyPolicy": "Forbid"},
        steps=((30, annotate("now")),),
        durations=(None,),
        end=150,
    ),
    Row(
        "trigger=backfill/reapplied/new-overlapping-range",
        {**every("1m"), "backfill": {"from": iso(-600), "to": iso(-300)}},
        steps=(
            (90, patch_spec(payload={"v": 2})),
            (150, patch_spec(backfill={"from": iso(-420), "to": iso(-180)})),
        ),
    ),
    # NB: backfill publishes every slot of its range whatever the concurrencyPolicy (the API
    # says "obeying concurrencyPolicy"); here its runs then make Forbid skip the on-time slots.
    Row(
        "trigger=backfill/Forbid",
        {
            **every("1m"),
            "concurrencyPolicy": "Forbid",
            "backfill": {"from": iso(-600), "to": iso(-300)},
        },
        default_duration=None,
        end=150,
    ),
    # --- NATS outages from 30 s to 2m30 (the 1m and 2m slots fall in them)
    # (None, One): a fire that fails is retried; the late slot it counted missed is counted
    # once (status.lastHandledSlot). Until #29 each retry counted it again (4 or 7 for one slot).
    # (ack-lost): the runs JetStream stored ran; their results, which carry the trigger, record
    # them as dispatched (with their trigger) and move lastHandledSlot, so the retries stop.
    # Until #29 they counted as missed, without a trigger, and dispatched < succeeded.
    *(
        Row(
            f"outage={mode}/catchUp-{catch_up}",
            {**every("1m"), "catchUp": {"policy": catch_up}},
            steps=((30, nats_mode(mode)), (150, nats_mode("up"))),
            end=270,
        )
        for mode in ("no-ack", "no-stream", "refused", "ack-lost")
        for catch_up in CATCH_UPS
    ),
    Row(
        "outage=no-ack/catchUp-One/staged",
        every("1m"),
        steps=((30, nats_mode("no-ack")), (150, nats_mode("up"))),
        end=270,
        staged=True,
    ),
    Row(
        "outage=refused/catchUp-One/staged",
        every("1m"),
        steps=((30, nats_mode("refused")), (150, nats_mode("up"))),
        end=270,
        staged=True,
    ),
    *(
        Row(
            f"outage={mode}/{policy}-run-active",
            {**every("1m"), "concurrencyPolicy": policy},
            steps=((30, nats_mode(mode)), (150, nats_mode("up"))),
            durations=(150,),
            end=330,
        )
        for policy in ("Forbid", "BufferOne", "Replace")
        for mode in ("no-ack", "refused")
    ),
    Row(
        "outage=no-ack/annotation-trigger",
        every("1m"),
        steps=((30, nats_mode("no-ack")), (45, annotate("during")), (150, nats_mode("up"))),
        end=270,
    ),
    Row("outage=refused/one-shot", {}, nats="refused", steps=((30, nats_mode("up")),), end=90),
    Row(
        "outage=refused/operator-gap/catchUp-All",
        {**every("2m"), "catchUp": {"policy": "All"}},
        steps=((60, down()), (570, nats_mode("refused")), (570, up()), (600, nats_mode("up"))),
        end=690,
    ),
    # --- shard moves: the Job's shard lost at 1m30 (its Lease expired: no hand-over) and
    # regained at 4m30
    *(
        Row(
            f"shard=lost-and-regained/catchUp-{catch_up}",
            {**every("1m"), "catchUp": {"policy": catch_up}},
            steps=((90, shards("r0", OTHER_SHARDS)), (270, shards("r0", ALL_SHARDS))),
            end=390,
        )
        for catch_up in CATCH_UPS
    ),
    Row(
        "shard=lost-and-regained/staged",
        every("1m"),
        steps=((90, shards("r0", OTHER_SHARDS)), (270, shards("r0", ALL_SHARDS))),
        end=390,
        staged=True,
    ),
    *(
        Row(
            f"shard=lost-and-regained/{policy}-run-active",
            {**every("1m"), "concurrencyPolicy": policy},
            steps=((90, shards("r0", OTHER_SHARDS)), (270, shards("r0", ALL_SHARDS))),
            durations=(200,),
            end=390,
        )
        for policy in ("Forbid", "BufferOne", "Replace")
    ),
    # handed over to r1 at 1m30 (r1 takes it 10 s later), and back to r0 at 3m30
    # (BufferOne): r1 takes over the slot r0 buffered (1m) from status.bufferedSlot and runs it;
    # r0, when it gets the shard back, forgets what it held. Until #29 r0 published it again
    # (only JetStream's duplicate window kept it from running twice).
    *(
        Row(
            f"shard=handed-over-and-back/{policy}",
            {**every("1m"), "concurrencyPolicy": policy},
            start=(("r0", ALL_SHARDS), ("r1", frozenset())),
            steps=(
                (90, shards("r0", OTHER_SHARDS, hand_over=True)),
                (100, shards("r1", frozenset({SHARD}))),
                (210, shards("r1", frozenset(), hand_over=True)),
                (220, shards("r0", ALL_SHARDS)),
            ),
            durations=(150,) if policy != "Allow" else (),
            end=330,
        )
        for policy in ("Allow", "BufferOne")
    ),
    # both replicas hold the shard from 1m30 to 3m30 (r0's Lease expired late)
    Row(
        "shard=held-twice/Allow",
        every("1m"),
        start=(("r0", ALL_SHARDS), ("r1", frozenset())),
        steps=((90, shards("r1", frozenset({SHARD}))), (210, shards("r0", OTHER_SHARDS))),
        end=330,
    ),
    # --- restarts: clean (pending status writes are written) or a crash (they are lost)
    # (crash): the slot whose record was lost ran; its result records it as dispatched with its
    # trigger. Until #29 it was published again (a duplicate), never counted dispatched and had
    # no trigger.
    Row(
        "restart=clean/between-slots",
        every("1m"),
        steps=((60.2, down()), (65, up())),
    ),
    Row(
        "restart=crash-before-status-write/catchUp-One",
        every("1m"),
        steps=((60.2, crash()), (90, up())),
    ),
    Row(
        "restart=crash-before-status-write/catchUp-None",
        {**every("1m"), "catchUp": {"policy": "None"}},
        steps=((60.2, crash()), (90, up())),
    ),
    # --- spec changes
    Row(
        "spec=interval-1m-changed-to-2m",
        every("1m"),
        steps=((90, patch_spec(schedule={"interval": "2m"})),),
        end=330,
    ),
    # --- the Queue
    Row(
        "queue=not-ready-until-45s",
        every("1m"),
        queue_ready=False,
        steps=((30, snapshot("status at 30s")), (45, queue_ready(True))),
        end=150,
    ),
    Row(
        "queue=not-ready-from-1m30-to-2m45",
        every("1m"),
        steps=(
            (90, queue_ready(False)),
            (150, snapshot("status at 2m30")),
            (165, queue_ready(True)),
        ),
        end=270,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_scheduler_characterisation(row: Row) -> None:
    assert run_virtual(play(row)) == GOLDEN[row.id]


# ---------------------------------------------------------------------------------------- golden

GOLDEN: dict[str, Outcome] = {
    "kind=interval-1m": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "kind=interval-1m/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "kind=interval-1m/spread-hash+jitter-10s": {
        "published": [
            "+00:00:00 r0 slot@-00:01:00 Schedule p0 stored",
            "+00:00:19 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:16 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:13 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 4},
            "active": ["slot@+00:03:00"],
            "runs": [
                "slot@+00:03:00 Schedule Pending",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
                "slot@-00:01:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "kind=interval-1m/endAt+2m": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3},
            "active": [],
            "runs": [
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:02:00",
            "nextRunTime": None,
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=False NoMoreRuns",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "kind=interval-1m/suspended-1m30-to-3m30": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 3,
        },
    },
    "kind=cron-9am-New_York": {
        "published": ["+00:02:00 r0 slot@+00:02:00 Schedule p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "succeeded": 1},
            "active": [],
            "runs": ["slot@+00:02:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:02:00",
            "nextRunTime": "+23:02:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "kind=one-shot/restarted": {
        "published": ["+00:00:00 r0 trigger:once@+00:00:00 Schedule p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "succeeded": 1},
            "active": [],
            "runs": ["trigger:once@+00:00:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": None,
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=False NoMoreRuns",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Allow/run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Allow/run-active/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Forbid/run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "skipped": 2},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Forbid/run-active/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "skipped": 2},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=BufferOne/run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "skipped": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=BufferOne/run-active/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "skipped": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Replace/run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "cancels": ["+00:01:00 r0 slot@+00:00:00"],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 5, "failed": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Cancelled",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "policy=Replace/run-active/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "cancels": ["+00:01:00 r0 slot@+00:00:00"],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 5, "failed": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Cancelled",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=None/operator-gap/newest-late": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "2 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 2, "succeeded": 2, "missed": 4},
            "active": [],
            "runs": ["slot@+00:10:00 Schedule Succeeded", "slot@+00:00:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=None/operator-gap/newest-on-time": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:08:30 r0 slot@+00:08:00 Schedule p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3, "missed": 3},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=One/operator-gap/newest-late": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:09:30 r0 slot@+00:08:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3, "missed": 3},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=One/operator-gap/newest-on-time": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:08:30 r0 slot@+00:08:00 Schedule p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3, "missed": 3},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/newest-late": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:09:30 r0 slot@+00:02:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:04:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:06:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:08:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 CatchUp Succeeded",
                "slot@+00:06:00 CatchUp Succeeded",
                "slot@+00:04:00 CatchUp Succeeded",
                "slot@+00:02:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/newest-on-time": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:08:30 r0 slot@+00:02:00 CatchUp p0 stored",
            "+00:08:30 r0 slot@+00:04:00 CatchUp p0 stored",
            "+00:08:30 r0 slot@+00:06:00 CatchUp p0 stored",
            "+00:08:30 r0 slot@+00:08:00 Schedule p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 Schedule Succeeded",
                "slot@+00:06:00 CatchUp Succeeded",
                "slot@+00:04:00 CatchUp Succeeded",
                "slot@+00:02:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All+window-5m/operator-gap/newest-late": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:09:30 r0 slot@+00:06:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:08:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 CatchUp Succeeded",
                "slot@+00:06:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/Forbid-run-active": {
        "published": ["+00:00:00 r0 slot@+00:00:00 Schedule p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "skipped": 5},
            "active": ["slot@+00:00:00"],
            "runs": ["slot@+00:00:00 Schedule Pending"],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/BufferOne-run-active": {
        "published": ["+00:00:00 r0 slot@+00:00:00 Schedule p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "skipped": 4},
            "active": ["slot@+00:00:00"],
            "runs": ["slot@+00:00:00 Schedule Pending"],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/Replace-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:09:30 r0 slot@+00:02:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:04:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:06:00 CatchUp p0 stored",
            "+00:09:30 r0 slot@+00:08:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "cancels": [
            "+00:09:30 r0 slot@+00:00:00",
            "+00:09:30 r0 slot@+00:02:00",
            "+00:09:30 r0 slot@+00:04:00",
            "+00:09:30 r0 slot@+00:06:00",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 2, "failed": 4},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 CatchUp Succeeded",
                "slot@+00:06:00 CatchUp Cancelled",
                "slot@+00:04:00 CatchUp Cancelled",
                "slot@+00:02:00 CatchUp Cancelled",
                "slot@+00:00:00 Schedule Cancelled",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=None/operator-gap/cron-9am-New_York-over-DST": {
        "published": ["+00:02:00 r0 slot@+00:02:00 Schedule p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "succeeded": 1, "missed": 2},
            "active": [],
            "runs": ["slot@+00:02:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:02:00",
            "nextRunTime": "+2d23:02:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=One/operator-gap/cron-9am-New_York-over-DST": {
        "published": [
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+2d00:30:00 r0 slot@+1d23:02:00 CatchUp p0 stored",
        ],
        "acks": "2 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 2, "succeeded": 2, "missed": 1},
            "active": [],
            "runs": ["slot@+1d23:02:00 CatchUp Succeeded", "slot@+00:02:00 Schedule Succeeded"],
            "lastScheduleTime": "+1d23:02:00",
            "nextRunTime": "+2d23:02:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "catchUp=All/operator-gap/cron-9am-New_York-over-DST": {
        "published": [
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+2d00:30:00 r0 slot@+23:02:00 CatchUp p0 stored",
            "+2d00:30:00 r0 slot@+1d23:02:00 CatchUp p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3},
            "active": [],
            "runs": [
                "slot@+1d23:02:00 CatchUp Succeeded",
                "slot@+23:02:00 CatchUp Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+1d23:02:00",
            "nextRunTime": "+2d23:02:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "trigger=annotation/interval/restarted": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:00:30 r0 trigger:one@+00:00:30 Manual p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:01:30 r0 trigger:two@+00:01:30 Manual p0 stored",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "trigger:two@+00:01:30 Manual Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "trigger:one@+00:00:30 Manual Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "lastTrigger": "two",
            "observedGeneration": 1,
        },
    },
    "trigger=annotation/suspended": {
        "published": ["+00:00:30 r0 trigger:go@+00:00:30 Manual p0 stored"],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "succeeded": 1},
            "active": [],
            "runs": ["trigger:go@+00:00:30 Manual Succeeded"],
            "lastScheduleTime": None,
            "nextRunTime": "+00:03:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=False Suspended",
                "Suspended=True Suspended",
            ],
            "lastTrigger": "go",
            "observedGeneration": 1,
        },
    },
    "trigger=annotation/one-shot": {
        "published": [
            "+00:00:00 r0 trigger:first@+00:00:00 Manual p0 stored",
            "+00:00:00 r0 trigger:once@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 trigger:second@+00:01:00 Manual p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3},
            "active": [],
            "runs": [
                "trigger:second@+00:01:00 Manual Succeeded",
                "trigger:first@+00:00:00 Manual Succeeded",
                "trigger:once@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": None,
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=False NoMoreRuns",
                "Suspended=False Active",
            ],
            "lastTrigger": "second",
            "observedGeneration": 1,
        },
    },
    "trigger=annotation/Forbid-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:00:30 r0 trigger:now@+00:00:30 Manual p0 stored",
        ],
        "acks": "2 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 2, "succeeded": 1, "skipped": 2},
            "active": ["slot@+00:00:00"],
            "runs": ["trigger:now@+00:00:30 Manual Succeeded", "slot@+00:00:00 Schedule Pending"],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": "+00:03:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "lastTrigger": "now",
            "observedGeneration": 1,
        },
    },
    "trigger=backfill/reapplied/new-overlapping-range": {
        "published": [
            "+00:00:00 r0 slot@-00:10:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:09:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:08:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:07:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:06:00 Backfill p0 stored",
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:02:30 r0 slot@-00:07:00 Backfill p0 duplicate",
            "+00:02:30 r0 slot@-00:06:00 Backfill p0 duplicate",
            "+00:02:30 r0 slot@-00:05:00 Backfill p0 stored",
            "+00:02:30 r0 slot@-00:04:00 Backfill p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "13 acked, 2 duplicates",
        "status": {
            "counters": {"dispatched": 11, "succeeded": 11},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
                "slot@-00:04:00 Backfill Succeeded",
                "slot@-00:05:00 Backfill Succeeded",
                "slot@-00:06:00 Backfill Succeeded",
                "slot@-00:07:00 Backfill Succeeded",
                "slot@-00:08:00 Backfill Succeeded",
                "slot@-00:09:00 Backfill Succeeded",
                "slot@-00:10:00 Backfill Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 3,
            "backfill": "[-00:07:00, -00:03:00) dispatched 4 at +00:02:30",
        },
    },
    "trigger=backfill/Forbid": {
        "published": [
            "+00:00:00 r0 slot@-00:10:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:09:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:08:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:07:00 Backfill p0 stored",
            "+00:00:00 r0 slot@-00:06:00 Backfill p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "skipped": 3},
            "active": [
                "slot@-00:10:00",
                "slot@-00:09:00",
                "slot@-00:08:00",
                "slot@-00:07:00",
                "slot@-00:06:00",
            ],
            "runs": [
                "slot@-00:06:00 Backfill Pending",
                "slot@-00:07:00 Backfill Pending",
                "slot@-00:08:00 Backfill Pending",
                "slot@-00:09:00 Backfill Pending",
                "slot@-00:10:00 Backfill Pending",
            ],
            "lastScheduleTime": None,
            "nextRunTime": "+00:03:00",
            "conditions": [
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
            "backfill": "[-00:10:00, -00:05:00) dispatched 5 at +00:00:00",
        },
    },
    "outage=no-ack/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:01:10 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:01:20 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:01:30 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:01:40 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:01:50 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:02:00 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:02:10 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:02:20 r0 slot@+00:01:00 CatchUp p0 no-ack",
            "+00:02:30 r0 slot@+00:01:00 CatchUp p0 stored",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-stream/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:05 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:15 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:25 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:35 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:45 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:55 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:05 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:25 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-stream/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:05 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:15 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:25 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:35 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:45 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:01:55 r0 slot@+00:01:00 unrecorded p0 no-stream",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:05 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:25 r0 slot@+00:02:00 Schedule p0 no-stream",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-stream/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:05 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:10 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:15 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:20 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:25 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:30 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:35 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:40 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:45 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:50 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:01:55 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:00 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:05 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:10 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:15 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:20 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:25 r0 slot@+00:01:00 CatchUp p0 no-stream",
            "+00:02:30 r0 slot@+00:01:00 CatchUp p0 stored",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:05 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:15 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:25 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:35 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:45 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:55 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:05 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:25 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:05 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:15 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:25 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:35 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:45 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:55 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:05 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:25 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:05 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:10 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:15 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:20 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:25 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:30 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:35 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:40 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:45 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:50 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:01:55 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:00 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:05 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:10 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:15 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:20 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:25 r0 slot@+00:01:00 CatchUp p0 refused",
            "+00:02:30 r0 slot@+00:01:00 CatchUp p0 stored",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=ack-lost/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored,ack-lost",
            "+00:01:10 r0 slot@+00:01:00 Schedule p0 duplicate,ack-lost",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored,ack-lost",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 duplicate,ack-lost",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=ack-lost/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored,ack-lost",
            "+00:01:10 r0 slot@+00:01:00 Schedule p0 duplicate,ack-lost",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored,ack-lost",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 duplicate,ack-lost",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=ack-lost/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored,ack-lost",
            "+00:01:10 r0 slot@+00:01:00 Schedule p0 duplicate,ack-lost",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored,ack-lost",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 duplicate,ack-lost",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "3 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/catchUp-One/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:09 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:19 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:29 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:39 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:49 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:59 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:02:09 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:19 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:29 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:39 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/catchUp-One/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:05 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:15 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:25 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:35 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:45 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:01:55 r0 slot@+00:01:00 unrecorded p0 refused",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:05 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:15 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:25 r0 slot@+00:02:00 Schedule p0 refused",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/Forbid-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "skipped": 2},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/Forbid-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "skipped": 2},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/BufferOne-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "skipped": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/BufferOne-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "skipped": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/Replace-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:10 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:20 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:30 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:40 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:01:50 r0 slot@+00:01:00 unrecorded p0 no-ack",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:10 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:20 r0 slot@+00:02:00 Schedule p0 no-ack",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "cancels": ["+00:01:00 r0 slot@+00:00:00"],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 4, "failed": 1, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Cancelled",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/Replace-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "cancels": [
            "+00:01:00 r0 refused",
            "+00:01:05 r0 refused",
            "+00:01:10 r0 refused",
            "+00:01:15 r0 refused",
            "+00:01:20 r0 refused",
            "+00:01:25 r0 refused",
            "+00:01:30 r0 refused",
            "+00:01:35 r0 refused",
            "+00:01:40 r0 refused",
            "+00:01:45 r0 refused",
            "+00:01:50 r0 refused",
            "+00:01:55 r0 refused",
            "+00:02:00 r0 refused",
            "+00:02:05 r0 refused",
            "+00:02:10 r0 refused",
            "+00:02:15 r0 refused",
            "+00:02:20 r0 refused",
            "+00:02:25 r0 refused",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=no-ack/annotation-trigger": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:00:45 r0 trigger:during@+00:00:45 Manual p0 no-ack",
            "+00:00:55 r0 trigger:during@+00:00:55 Manual p0 no-ack",
            "+00:01:05 r0 trigger:during@+00:01:05 Manual p0 no-ack",
            "+00:01:15 r0 trigger:during@+00:01:15 Manual p0 no-ack",
            "+00:01:25 r0 trigger:during@+00:01:25 Manual p0 no-ack",
            "+00:01:35 r0 trigger:during@+00:01:35 Manual p0 no-ack",
            "+00:01:45 r0 trigger:during@+00:01:45 Manual p0 no-ack",
            "+00:01:55 r0 trigger:during@+00:01:55 Manual p0 no-ack",
            "+00:02:05 r0 trigger:during@+00:02:05 Manual p0 no-ack",
            "+00:02:15 r0 trigger:during@+00:02:15 Manual p0 no-ack",
            "+00:02:25 r0 trigger:during@+00:02:25 Manual p0 no-ack",
            "+00:02:35 r0 trigger:during@+00:02:35 Manual p0 stored",
            "+00:02:35 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 1},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "trigger:during@+00:02:35 Manual Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "lastTrigger": "during",
            "observedGeneration": 1,
        },
    },
    "outage=refused/one-shot": {
        "published": [
            "+00:00:00 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:05 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:10 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:15 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:20 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:25 r0 trigger:once@+00:00:00 Schedule p0 refused",
            "+00:00:30 r0 trigger:once@+00:00:00 Schedule p0 stored",
        ],
        "acks": "1 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 1, "succeeded": 1},
            "active": [],
            "runs": ["trigger:once@+00:00:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:00:00",
            "nextRunTime": None,
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=False NoMoreRuns",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "outage=refused/operator-gap/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:09:30 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:09:35 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:09:40 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:09:45 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:09:50 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:09:55 r0 slot@+00:02:00 CatchUp p0 refused",
            "+00:10:00 r0 slot@+00:02:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:04:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:06:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:08:00 CatchUp p0 stored",
            "+00:10:00 r0 slot@+00:10:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:10:00 Schedule Succeeded",
                "slot@+00:08:00 CatchUp Succeeded",
                "slot@+00:06:00 CatchUp Succeeded",
                "slot@+00:04:00 CatchUp Succeeded",
                "slot@+00:02:00 CatchUp Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:10:00",
            "nextRunTime": "+00:12:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/catchUp-All": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:02:00 CatchUp p0 stored",
            "+00:04:30 r0 slot@+00:03:00 CatchUp p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "7 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 7, "succeeded": 7},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 CatchUp Succeeded",
                "slot@+00:02:00 CatchUp Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/staged": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/Forbid-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4, "skipped": 1, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/BufferOne-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:50 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:10 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=lost-and-regained/Replace-run-active": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:04:30 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
            "+00:06:00 r0 slot@+00:06:00 Schedule p0 stored",
        ],
        "cancels": ["+00:01:00 r0 slot@+00:00:00"],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 4, "failed": 1, "missed": 2},
            "active": [],
            "runs": [
                "slot@+00:06:00 Schedule Succeeded",
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Cancelled",
            ],
            "lastScheduleTime": "+00:06:00",
            "nextRunTime": "+00:07:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=handed-over-and-back/Allow": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r1 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r1 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "6 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=handed-over-and-back/BufferOne": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:02:30 r1 slot@+00:01:00 Schedule p0 stored",
            "+00:03:00 r1 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r0 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "5 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5, "skipped": 1},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "shard=held-twice/Allow": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:02:00 r1 slot@+00:02:00 Schedule p0 duplicate",
            "+00:03:00 r1 slot@+00:03:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 duplicate",
            "+00:04:00 r1 slot@+00:04:00 Schedule p0 stored",
            "+00:05:00 r1 slot@+00:05:00 Schedule p0 stored",
        ],
        "acks": "8 acked, 2 duplicates",
        "status": {
            "counters": {"dispatched": 6, "succeeded": 6},
            "active": [],
            "runs": [
                "slot@+00:05:00 Schedule Succeeded",
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:05:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "restart=clean/between-slots": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "restart=crash-before-status-write/catchUp-One": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "restart=crash-before-status-write/catchUp-None": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:03:00",
            "nextRunTime": "+00:04:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "spec=interval-1m-changed-to-2m": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "acks": "4 acked, 0 duplicates",
        "status": {
            "counters": {"dispatched": 4, "succeeded": 4},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:06:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 2,
        },
    },
    "queue=not-ready-until-45s": {
        "published": [
            "+00:00:50 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:00 r0 slot@+00:02:00 Schedule p0 stored",
        ],
        "events": [
            '+00:00:00 r0 QueueNotReady: spec.queue: Queue "q" is not Ready: stream missing'
        ],
        "acks": "3 acked, 0 duplicates",
        "status at 30s": {
            "counters": {},
            "active": [],
            "runs": [],
            "lastScheduleTime": None,
            "nextRunTime": None,
            "conditions": ["Ready=False QueueNotReady"],
            "observedGeneration": 1,
        },
        "status": {
            "counters": {"dispatched": 3, "succeeded": 3},
            "active": [],
            "runs": [
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:02:00",
            "nextRunTime": "+00:03:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
    "queue=not-ready-from-1m30-to-2m45": {
        "published": [
            "+00:00:00 r0 slot@+00:00:00 Schedule p0 stored",
            "+00:01:00 r0 slot@+00:01:00 Schedule p0 stored",
            "+00:02:50 r0 slot@+00:02:00 Schedule p0 stored",
            "+00:03:00 r0 slot@+00:03:00 Schedule p0 stored",
            "+00:04:00 r0 slot@+00:04:00 Schedule p0 stored",
        ],
        "events": [
            '+00:02:00 r0 QueueNotReady: spec.queue: Queue "q" is not Ready: stream missing'
        ],
        "acks": "5 acked, 0 duplicates",
        "status at 2m30": {
            "counters": {"dispatched": 2, "succeeded": 2},
            "active": [],
            "runs": ["slot@+00:01:00 Schedule Succeeded", "slot@+00:00:00 Schedule Succeeded"],
            "lastScheduleTime": "+00:01:00",
            "nextRunTime": "+00:02:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=False QueueNotReady",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
        "status": {
            "counters": {"dispatched": 5, "succeeded": 5},
            "active": [],
            "runs": [
                "slot@+00:04:00 Schedule Succeeded",
                "slot@+00:03:00 Schedule Succeeded",
                "slot@+00:02:00 Schedule Succeeded",
                "slot@+00:01:00 Schedule Succeeded",
                "slot@+00:00:00 Schedule Succeeded",
            ],
            "lastScheduleTime": "+00:04:00",
            "nextRunTime": "+00:05:00",
            "conditions": [
                "LastRunSucceeded=True Succeeded",
                "Ready=True Valid",
                "Scheduled=True NextRunPlanned",
                "Suspended=False Active",
            ],
            "observedGeneration": 1,
        },
    },
}
