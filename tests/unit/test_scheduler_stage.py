"""The scheduler's staged bursts, with stand-ins for NATS and the status writer.

Staging checks and encodes the fires due at one instant before it; the write at the instant
checks again what could have changed. These tables drive :meth:`Scheduler._stage_burst` and
:meth:`Scheduler._write_stage` directly: which fires go out, which take the full path, and that
every staged Job ends its fire (none is left "firing") whatever happens.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg

from kadence.requests import Prepared
from kadence_operator import scheduling
from kadence_operator.api.job import JobSpec
from kadence_operator.jobs import dispatcher as dispatcher_module
from kadence_operator.jobs.entry import Armed, Entry
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.jobs.scheduler import Scheduler
from kadence_operator.metrics import OperatorMetrics
from kadence_operator.settings import OperatorSettings

SLOT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
QUEUE = QueueInfo("ns", "q", 4, 30.0, True)


@pytest.fixture(autouse=True)
def settle_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of replies are cut by count here, not by time (see the budget's own test)."""
    monkeypatch.setattr(dispatcher_module, "SETTLE_BUDGET", 10.0)


class FakeRequests:
    """Records what would be written; ``fail`` makes :meth:`write` fail like a closed
    connection does (its requests discarded); replies are left to the test."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.discarded: list[bytes] = []
        self.writes = 0
        self.fail = False
        #: Fail every write from this one on (counted from 0).
        self.fail_from: int | None = None
        self.prepared: list[Prepared] = []

    @property
    def pending(self) -> int:
        return sum(not p.reply.done() for p in self.prepared)

    async def ready(self) -> None:
        if self.fail:
            raise nats.errors.ConnectionClosedError

    def prepare(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Prepared:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.prepared.append(Prepared(token=subject, wire=payload, reply=fut))
        return self.prepared[-1]

    def discard(self, prepared: Prepared) -> None:
        if not prepared.reply.cancelled():  # idempotent, as Requests.discard is
            self.discarded.append(prepared.wire)
        prepared.reply.cancel()

    async def write(self, prepared: Sequence[Prepared]) -> None:
        if self.fail or (self.fail_from is not None and self.writes >= self.fail_from):
            for p in prepared:
                self.discard(p)
            raise nats.errors.ConnectionClosedError
        self.writes += 1
        self.written.extend(p.wire for p in prepared)


class FakeWriter:
    def post(self, *args: Any, **kwargs: Any) -> None:
        return None


def make_scheduler(
    count: int,
    *,
    writer: Any = None,
    clock: Callable[[], datetime] = lambda: SLOT,
    metrics: OperatorMetrics | None = None,
    queues: int = 1,
) -> tuple[Scheduler, FakeRequests, list[Entry]]:
    sched = Scheduler(
        writer=writer or FakeWriter(),
        settings=OperatorSettings(dispatch_stage=1, shards=4),
        queues={("ns", f"q{n}" if n else "q"): QUEUE for n in range(queues)},
        nc=object(),  # type: ignore[arg-type]
        metrics=metrics,
        clock=clock,
    )
    requests = FakeRequests()
    sched._requests = requests  # type: ignore[assignment]
    sched._owned = frozenset(range(4))
    entries = []
    planned = scheduling.PlannedSlot(
        slot=SLOT, due=SLOT, after=SLOT - timedelta(seconds=1), following=SLOT + timedelta(1)
    )
    for i in range(count):
        entry = Entry(
            namespace="ns",
            name=f"j{i:04d}",
            uid=f"uid-{i}",
            generation=1,
            created=SLOT - timedelta(hours=1),
            spec_json=b"{}",
            schedule=None,
            shard=i % 4,
            last_slot=planned.after,
            queue_name=f"q{i % queues}" if i % queues else "q",
            ready_written=True,
        )
        sched.jobs.entries[entry.key] = entry
        sched.jobs.push(entry, SLOT)
        entry.armed = Armed(
            planned=planned,
            run_id=f"run-{i}",
            subject=f"ns.q.{i}",
            payload=entry.name.encode(),
            version=entry.version,
            generation=1,
            queue=QUEUE,
        )
        entries.append(entry)
    return sched, requests, entries


def firing(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries if e.firing]


def heap_names(sched: Scheduler) -> list[tuple[str, datetime]]:
    current = [(d, sched.jobs.entries.get(d.key)) for d in sched.jobs.heap]
    return sorted((d.key[1], d.at) for d, e in current if e is not None and e.version == d.version)


async def test_a_burst_is_staged_within_its_lead_and_written_at_once() -> None:
    sched, requests, entries = make_scheduler(250)
    await sched._stage_burst(SLOT - timedelta(seconds=1))  # too early: nothing staged
    assert sched._stage is None
    lead = sched._lead(SLOT)
    assert 0 < lead <= 0.25
    await sched._stage_burst(SLOT - timedelta(seconds=lead / 2))
    assert sched._stage is not None
    assert len(sched._stage.fires) == 250
    assert not sched.jobs.heap
    assert len(firing(entries)) == 250
    assert requests.written == []  # nothing leaves before the instant
    # The holds still see the burst until it is written.
    assert sched.jobs.bursts.due_at(SLOT.timestamp()) == 250
    await sched._write_stage(SLOT)
    assert requests.written == [e.name.encode() for e in entries]
    assert requests.writes == 1
    assert sched.jobs.bursts.due_at(SLOT.timestamp()) == 0
    assert sched._firing == 250  # until JetStream acks each one


def body(entry: Entry, **changes: Any) -> dict[str, Any]:
    """A watch event of ``entry``'s Job: its metadata and status, with ``changes``."""
    meta = {"namespace": entry.namespace, "name": entry.name, "uid": entry.uid}
    meta["generation"] = changes.pop("generation", entry.generation)
    meta["uid"] = changes.pop("uid", entry.uid)
    return {"metadata": meta, "status": changes.pop("status", {})} | changes


def upsert(s: Scheduler, entry: Entry, **changes: Any) -> None:
    s.upsert(body(entry, **changes), JobSpec(queue="q", task="t"))


async def shards_move(s: Scheduler, _: list[Entry]) -> None:
    await s.on_shards(frozenset({1, 2, 3}))


Change = Callable[[Scheduler, list[Entry]], Awaitable[None] | object]


@pytest.mark.parametrize(
    ("change", "full_path"),
    [
        # a new generation or a trigger, seen while staged: marked for another look
        (lambda s, e: s.jobs.wake_entry(e[1]), ["j0001"]),
        (lambda s, e: upsert(s, e[2], generation=2), ["j0002"]),
        # the Job was deleted, or recreated (another object under its key)
        (lambda s, e: s.remove("ns", "j0003"), ["j0003"]),
        (lambda s, e: upsert(s, e[3], uid="uid-new"), ["j0003"]),
        # its shard moved to another replica
        (shards_move, ["j0000", "j0004"]),
        # a newer slot was recorded (another replica fired it)
        (
            lambda s, e: s.refresh(body(e[5], status={"lastScheduleTime": "2026-11-30T12:00:00Z"})),
            ["j0005"],
        ),
        # the Queue changed: every fire of it
        (
            lambda s, e: s._queues.__setitem__(("ns", "q"), QueueInfo("ns", "q", 8, 30.0, True)),
            [f"j{i:04d}" for i in range(6)],
        ),
        # looked at again (a watch event, a run ended) with nothing that matters changed
        (lambda s, e: s.refresh(body(e[0])), []),
        (lambda s, e: s.note_finished("ns", "j0001", "run-earlier"), []),
    ],
)
async def test_what_changed_while_staged_takes_the_full_path(
    change: Change, full_path: list[str]
) -> None:
    sched, requests, entries = make_scheduler(6)
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    changed = change(sched, entries)
    if inspect.isawaitable(changed):
        await changed
    await sched._write_stage(SLOT)
    written = sorted(w.decode() for w in requests.written)
    assert written == sorted({e.name for e in entries} - set(full_path))
    assert sorted(w.decode() for w in requests.discarded) == full_path
    # Those are looked at again at once (the loop skips the deleted one and foreign shards).
    assert [name for name, _ in heap_names(sched)] == [
        n for n in full_path if ("ns", n) in sched.jobs.entries
    ]
    assert not any(e.firing for e in entries if e.name in full_path)


@pytest.mark.parametrize(
    ("late", "written"),
    [
        pytest.param(timedelta(0), 6, id="at-the-instant"),
        pytest.param(timedelta(milliseconds=999), 6, id="late-within-the-slot"),
        pytest.param(timedelta(seconds=1), 0, id="when-the-following-slot-is-due"),
    ],
)
async def test_a_burst_written_too_late_takes_the_full_path(late: timedelta, written: int) -> None:
    sched, requests, entries = make_scheduler(6)
    for entry in entries:  # the slot after the staged one comes a second later
        assert entry.armed is not None
        entry.armed.planned = scheduling.PlannedSlot(
            slot=SLOT,
            due=SLOT,
            after=SLOT - timedelta(seconds=1),
            following=SLOT + timedelta(seconds=1),
        )
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    await sched._write_stage(SLOT + late)
    assert len(requests.written) == written
    assert len(requests.discarded) == 6 - written


async def test_a_failed_write_retries_every_fire_later_and_leaves_none_firing() -> None:
    sched, requests, entries = make_scheduler(150)
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    requests.fail = True
    await sched._write_stage(SLOT)
    assert requests.written == []
    assert len(requests.discarded) == 150
    assert firing(entries) == []
    assert sched._firing == 0
    assert sched._quiet.is_set()
    later = SLOT + timedelta(seconds=5)
    assert heap_names(sched) == [(e.name, later) for e in entries]
    assert len(sched.jobs.bursts) == 150  # the new pushes, the staged ones no longer counted


async def test_stopping_drops_the_stage_and_puts_its_jobs_back() -> None:
    sched, requests, entries = make_scheduler(3)
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    sched._drop_stage()
    assert requests.written == []
    assert len(requests.discarded) == 3
    assert firing(entries) == []
    assert sched._firing == 0
    assert [name for name, _ in heap_names(sched)] == ["j0000", "j0001", "j0002"]


async def test_no_reply_inbox_means_no_stage_and_the_fires_stay_due() -> None:
    sched, requests, entries = make_scheduler(20)
    requests.fail = True
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    assert sched._stage is None
    assert firing(entries) == []
    assert heap_names(sched) == [(e.name, SLOT) for e in entries]  # the loop fires them then


class Lags(OperatorMetrics):
    """The dispatch lags observed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.lags: list[float] = []

    def observe_lag(self, seconds: float) -> None:
        self.lags.append(seconds)


async def stage_and_write(sched: Scheduler) -> list[asyncio.Future[Msg]]:
    """Stage the burst due at SLOT and write it; its replies' futures."""
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    assert sched._stage is not None
    replies = [fire.request.reply for fire in sched._stage.fires]
    await sched._write_stage(SLOT)
    return replies


def ack(replies: list[asyncio.Future[Msg]]) -> None:
    """Resolve each reply with a PubAck."""
    for seq, reply in enumerate(replies, 1):
        reply.set_result(Msg(None, data=b'{"stream": "S", "seq": %d}' % seq))  # type: ignore[arg-type]


async def write_and_ack_a_burst(sched: Scheduler) -> None:
    """Stage the burst due at SLOT, write it, and resolve every reply with a PubAck."""
    ack(await stage_and_write(sched))


async def test_each_ack_is_timed_when_it_comes_not_after_the_bookkeeping_of_the_others() -> None:
    """A burst's replies are timed as they come; their bookkeeping (status changes, the next
    slot) follows, a slice at a time. Here that bookkeeping takes 1 ms per status change: timed
    after it, the 250th ack would look ~500 ms late."""
    now = [SLOT]

    class SlowWriter:
        def post(self, *args: Any, **kwargs: Any) -> None:
            now[0] += timedelta(milliseconds=1)

    lags = Lags()
    sched, _requests, entries = make_scheduler(
        250, writer=SlowWriter(), clock=lambda: now[0], metrics=lags
    )
    every_second = scheduling.Schedule(interval=timedelta(seconds=1), anchor=SLOT)
    for entry in entries:
        entry.schedule = every_second
    now[0] = SLOT + timedelta(milliseconds=20)  # when the PubAcks come
    await write_and_ack_a_burst(sched)
    for _ in range(10):
        await asyncio.sleep(0)
    assert lags.lags == [pytest.approx(0.020)] * 250
    assert sched.published == 250
    assert sched._firing == 0
    assert [e.last_slot for e in entries] == [SLOT] * 250
    assert heap_names(sched) == [(e.name, SLOT + timedelta(seconds=1)) for e in entries]
    # The bookkeeping ran after every ack was timed: two status changes per run.
    assert now[0] == SLOT + timedelta(milliseconds=20 + 2 * 250)


async def test_replies_are_settled_a_slice_at_a_time() -> None:
    """Between slices the loop runs other callbacks: the read loop takes the replies still
    coming (and their time) instead of waiting for all the bookkeeping."""
    sched, _requests, _entries = make_scheduler(250)
    await write_and_ack_a_burst(sched)
    settled: list[int] = []
    loop = asyncio.get_running_loop()

    def count() -> None:
        settled.append(sched.published)
        if sched.published < 250:
            loop.call_soon(count)

    await asyncio.sleep(0)  # the replies' done callbacks run; the first slice is queued
    assert sched.published == 0
    count()
    for _ in range(10):
        await asyncio.sleep(0)
    slice_ = dispatcher_module.SETTLE_SLICE
    assert slice_ < 250
    assert settled[:4] == [0, slice_, 2 * slice_, 250]


async def test_a_slice_of_replies_ends_when_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many replies are waiting, one slice takes about ``SETTLE_BUDGET`` of the loop
    (here none: one reply per slice)."""
    monkeypatch.setattr(dispatcher_module, "SETTLE_BUDGET", 0.0)
    sched, _requests, _entries = make_scheduler(5)
    await write_and_ack_a_burst(sched)
    await asyncio.sleep(0)  # the replies' done callbacks run; the first slice is queued
    published = []
    for _ in range(6):
        await asyncio.sleep(0)
        published.append(sched.published)
    assert published == [1, 2, 3, 4, 5, 5]


async def test_settling_waits_for_the_bursts_other_replies_but_not_long() -> None:
    """While more than ``dispatch_stage`` requests still wait for their replies, the replies
    already in are noted but not settled, so the loop reads the others first; after
    ``SETTLE_DEFER`` they are settled anyway."""
    now = [SLOT]
    sched, _requests, _entries = make_scheduler(250, clock=lambda: now[0])
    replies = await stage_and_write(sched)
    ack(replies[:200])
    await asyncio.sleep(0.02)  # several polls
    assert (sched.published, len(sched._settler.replies)) == (0, 200)
    ack(replies[200:])
    await asyncio.sleep(0.1)  # the next poll finds none outstanding and settles them all
    assert (sched.published, len(sched._settler.replies)) == (250, 0)
    # A reply that never comes does not hold the others back for more than SETTLE_DEFER.
    sched2, _, _ = make_scheduler(250, clock=lambda: now[0])
    ack((await stage_and_write(sched2))[:100])
    await asyncio.sleep(0.02)
    assert sched2.published == 0
    now[0] += timedelta(milliseconds=100)  # the bound docs/operator.md gives
    await asyncio.sleep(0.1)
    assert (sched2.published, len(sched2._settler.replies)) == (100, 0)


@pytest.mark.parametrize(
    ("error", "traceback"),
    [
        # the Queue's stream deleted (its namespace going away): a condition, one line
        (nats.js.errors.NoStreamResponseError(), False),
        (nats.errors.TimeoutError(), False),
        # anything else is a bug: with its traceback
        (RuntimeError("bug"), True),
    ],
)
async def test_a_failed_fire_is_retried_and_logged_by_kind(
    error: Exception, traceback: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sched, _requests, entries = make_scheduler(1)
    entry = entries[0]
    try:
        raise error
    except Exception:
        sched._fire_failed(entry, SLOT)
    (record,) = [r for r in caplog.records if "firing ns/j0000 failed" in r.getMessage()]
    assert (record.exc_info is not None) is traceback
    assert record.levelname == ("ERROR" if traceback else "WARNING")
    assert heap_names(sched)[-1] == ("j0000", SLOT + timedelta(seconds=5))


async def settle(sched: Scheduler) -> None:
    """Let the replies' callbacks and the settling they schedule run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_to_two_queues_is_a_request_per_run() -> None:
    """Each staged run is a publish of its own, written in the order staged, whatever its
    Queue, with a reply future of its own; one changed while staged takes the full path."""
    sched, requests, entries = make_scheduler(7, queues=2)
    await sched._stage_burst(SLOT - timedelta(milliseconds=1))
    assert len(requests.prepared) == 7
    entries[2].refire = True  # changed while staged: the full path
    await sched._write_stage(SLOT)
    assert [w.decode() for w in requests.written] == [e.name for e in entries if e.name != "j0002"]
    assert requests.discarded == [b"j0002"]
    assert len({id(p.reply) for p in requests.prepared}) == 7


async def test_a_failing_write_leaves_none_firing() -> None:
    """Two Queues, one write. When it fails, every fire of the burst is tried again in 5 s."""
    sched, requests, entries = make_scheduler(250, queues=2)
    requests.fail_from = 0
    replies = await stage_and_write(sched)
    assert requests.written == []
    await settle(sched)
    assert len(replies) == 250
    assert firing(entries) == []
    assert sched._firing == 0
    later = SLOT + timedelta(seconds=5)
    assert heap_names(sched) == [(e.name, later) for e in entries]
