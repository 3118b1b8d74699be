"""Counting slots across an operator crash (issue #29), on the pure core.

A replica publishes a run and dies before its dispatch record reaches the status (the status
writer coalesces for up to one status interval). Its successor builds the Job's view from the
status, decides the slots since, and the run's results come in before or after that. Whatever
the order, every slot must end up counted once: dispatched (with its trigger) or missed.

The replicas are simulated with the real decision (:func:`plan.decide`), the real view
(:meth:`Entry.observe_status`) and the real fold; only the status writer is a list of mutations
applied in order, as the writer applies them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence.protocol import JobRef, RunResult, RunState, decode_run
from kadence_operator import scheduling
from kadence_operator.api import JobSpec
from kadence_operator.jobs import plan, runs
from kadence_operator.jobs.entry import Entry, adopt_buffered
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.results import fold

UID = "0f6c2d5e-1a43-4b8e-9f00-3c1d2e4f5a60"
CREATED = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=5)
QUEUE = QueueInfo("ns", "q", 1, 30.0, True)
JOB = JobRef(namespace="ns", name="every5s", uid=UID)
LIMITS = (20, 20)


def slot(n: int) -> datetime:
    return CREATED + n * INTERVAL


def entry_from(
    status: dict[str, Any], *, catch_up: scheduling.CatchUpPolicy, policy: str = "Allow"
) -> Entry:
    """A replica's view of the Job, as it builds it from a watch event."""
    entry = Entry(
        namespace="ns",
        name="every5s",
        uid=UID,
        generation=1,
        created=CREATED,
        spec_json=b"",
        schedule=scheduling.Schedule(interval=INTERVAL, anchor=CREATED),
        shard=0,
    )
    entry.queue_name = "q"
    entry.catch_up = catch_up
    entry.policy = scheduling.ConcurrencyPolicy(policy)
    entry.ready_written = True
    entry.observe_status(status, now=0.0)
    return entry


def fire(
    status: dict[str, Any], entry: Entry, now: datetime, *, record: bool = True
) -> tuple[dict[str, Any], list[plan.Publish]]:
    """One fire: apply the plan's status mutations (and, with ``record``, the dispatch records
    of what it published) as the status writer would; update the view like the executor."""
    published: list[plan.Publish] = []
    if entry.adopt:
        adopt_buffered(entry)
    for effect in plan.decide(entry, QUEUE, now).effects:
        if isinstance(effect, plan.Post):
            status = effect.mutation(status)
        elif isinstance(effect, plan.Publish):
            published.append(effect)
            entry.sent[effect.run_id] = 0.0
            if record:
                status = fold.record_dispatch(
                    status,
                    run_id=effect.run_id,
                    scheduled_at=effect.slot,
                    trigger=effect.trigger,
                    limits=LIMITS,
                )
        elif isinstance(effect, plan.Update) and effect.field == "last_slot":
            entry.last_slot = effect.value
        elif isinstance(effect, plan.Update) and effect.field == "buffered":
            entry.buffered = effect.value
    return status, published


def succeeded(run: plan.Publish) -> RunResult:
    return RunResult(
        run_id=run.run_id,
        attempt=1,
        job=JOB,
        state=RunState.SUCCEEDED,
        scheduled_at=run.slot,
        trigger=run.trigger,
        finished_at=run.slot + timedelta(seconds=1),
    )


def folded(status: dict[str, Any], result: RunResult) -> dict[str, Any]:
    assert result.finished_at is not None
    now = result.finished_at + timedelta(seconds=1)
    outcome = fold.fold_result(status, result, limits=LIMITS, generation=1, now=now)
    assert outcome.accepted, outcome.reason
    return outcome.status


def run_before_crash(catch_up: scheduling.CatchUpPolicy) -> tuple[dict[str, Any], plan.Publish]:
    """Slots 0..3 run and are recorded; slot 4 is published and the replica dies before its
    record is written."""
    status: dict[str, Any] = {}
    entry = entry_from(status, catch_up=catch_up)
    for n in range(4):
        status, runs = fire(status, entry, slot(n) + timedelta(milliseconds=5))
        assert [r.slot for r in runs] == [slot(n)]
        for run in runs:
            status = folded(status, succeeded(run))
            entry.sent.pop(run.run_id, None)
    _, lost = fire(status, entry, slot(4) + timedelta(milliseconds=5), record=False)
    assert [r.slot for r in lost] == [slot(4)]
    return status, lost[0]


def accounted(status: dict[str, Any], *, slots: int) -> None:
    counters = status["counters"]
    runs = {r["runId"]: r for r in status["runs"]}
    assert counters["dispatched"] == len(runs), counters
    assert counters["succeeded"] == sum(r["state"] == "Succeeded" for r in runs.values())
    assert counters["dispatched"] + counters["missed"] + counters["skipped"] == slots, counters
    assert all(r.get("trigger") for r in runs.values()), [r for r in runs.values()]


@pytest.mark.parametrize("result_first", [False, True], ids=["result-after", "result-before"])
def test_a_run_published_just_before_a_crash_is_dispatched_not_missed(result_first: bool) -> None:
    """The successor comes back 15 s later (slots 5 and 6 passed, 7 is on time): the lost
    slot 4 ran and must count as dispatched with its trigger, 5 and 6 as missed (catchUp
    None). Before the fix: dispatched 8, succeeded 9, missed 3, and no trigger on slot 4."""
    status, lost = run_before_crash(scheduling.CatchUpPolicy.NONE)
    successor = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE)
    if result_first:
        status = folded(status, succeeded(lost))
    status, runs = fire(status, successor, slot(7) + timedelta(milliseconds=5))
    assert [r.slot for r in runs] == [slot(7)]
    if not result_first:
        status = folded(status, succeeded(lost))
    for run in runs:
        status = folded(status, succeeded(run))
    accounted(status, slots=8)
    assert status["counters"]["missed"] == 2
    record = next(r for r in status["runs"] if r["runId"] == lost.run_id)
    assert record["trigger"] == "Schedule"
    assert status["lastScheduleTime"] == "2026-12-06T12:00:35Z"


def test_catch_up_republishes_the_lost_run_and_jetstream_drops_the_copy() -> None:
    """With catchUp All the successor publishes slot 4 again under the same run id (JetStream
    de-duplicates it); it is counted once whatever comes first."""
    status, lost = run_before_crash(scheduling.CatchUpPolicy.ALL)
    successor = entry_from(status, catch_up=scheduling.CatchUpPolicy.ALL)
    status, runs = fire(status, successor, slot(7) + timedelta(milliseconds=5))
    assert [r.slot for r in runs] == [slot(4), slot(5), slot(6), slot(7)]
    assert runs[0].run_id == lost.run_id
    status = folded(status, succeeded(lost))
    for run in runs[1:]:
        status = folded(status, succeeded(run))
    accounted(status, slots=8)
    assert status["counters"]["missed"] == 0


def test_missed_slots_are_counted_once_across_two_restarts() -> None:
    """A Job that misses slots and is restarted again before its next dispatch (nothing moved
    lastScheduleTime) must not count the same slots missed twice."""
    status, lost = run_before_crash(scheduling.CatchUpPolicy.NONE)
    status = folded(status, succeeded(lost))
    # Down from slot 4 to 70 s later: slot 18 is on time... but its publish fails, then the
    # replica dies; the next one comes back before slot 19.
    first = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE)
    effects = plan.decide(first, QUEUE, slot(18) + timedelta(milliseconds=5)).effects
    for effect in effects:
        if isinstance(effect, plan.Publish):
            break  # the publish times out: nothing after it happens
        if isinstance(effect, plan.Post):
            status = effect.mutation(status)
    assert status["counters"]["missed"] == 13  # slots 5 .. 17
    second = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE)
    status, runs = fire(status, second, slot(18) + timedelta(milliseconds=900))
    assert [r.slot for r in runs] == [slot(18)]
    assert status["counters"]["missed"] == 13


def test_slots_skipped_by_forbid_are_not_missed_after_a_restart() -> None:
    """Forbid skips slots while a long run is active; a restart must not count them again as
    missed (they were handled: skipped)."""
    status: dict[str, Any] = {}
    entry = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE, policy="Forbid")
    status, runs = fire(status, entry, slot(0) + timedelta(milliseconds=5))
    assert len(runs) == 1
    for n in range(1, 4):
        status, more = fire(status, entry, slot(n) + timedelta(milliseconds=5))
        assert more == []
    assert status["counters"]["skipped"] == 3
    successor = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE, policy="Forbid")
    status, more = fire(status, successor, slot(4) + timedelta(milliseconds=5))
    assert more == []
    assert status["counters"]["skipped"] == 4
    assert status["counters"]["missed"] == 0


def test_a_result_for_a_run_the_status_knows_is_not_recounted() -> None:
    status, lost = run_before_crash(scheduling.CatchUpPolicy.NONE)
    status = folded(status, succeeded(lost))
    again = fold.fold_result(status, succeeded(lost), limits=LIMITS, generation=1, now=CREATED)
    assert not again.accepted
    assert again.status["counters"] == status["counters"]


@pytest.mark.parametrize("payload", [{"n": 1}, {"note": "kadence-trigger-7f3a"}])
@pytest.mark.parametrize("trigger", ["Schedule", "CatchUp", "Backfill", "Manual"])
def test_every_run_request_carries_its_trigger(payload: Any, trigger: str) -> None:
    """The request template fills the trigger in like the run id and the slot (also when the
    spec happens to contain the stand-in, which then takes the slower model path)."""
    spec = JobSpec.model_validate(
        {"queue": "q", "task": "t", "schedule": {"interval": "5s"}, "payload": payload}
    )
    template = runs.request_template(spec=spec, job=JOB, queue=QUEUE, default_bucket="b")
    encoded = template.encode(run_id="s-1", scheduled_at=slot(1), trigger=trigger)
    request = decode_run(encoded)
    assert (request.trigger, request.run_id, request.scheduled_at) == (trigger, "s-1", slot(1))
    assert request.payload == payload
    _, built = runs.build(
        spec=spec,
        job=JOB,
        queue=QUEUE,
        run_id="s-1",
        scheduled_at=slot(1),
        trigger=trigger,
        default_bucket="b",
    )
    assert request == built


def test_a_slot_buffered_when_the_operator_dies_runs_once_after_it() -> None:
    """BufferOne held slot 1 back behind the long run of slot 0 (the status records it); the
    replica dies; its successor runs slot 1 once the run of slot 0 ends, and counts every slot
    once. Before #29 the held slot was only in the dead replica's memory: never run, never
    counted."""
    status: dict[str, Any] = {}
    entry = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE, policy="BufferOne")
    status, runs = fire(status, entry, slot(0) + timedelta(milliseconds=5))
    first = runs[0]
    status, more = fire(status, entry, slot(1) + timedelta(milliseconds=5))
    assert more == []
    assert entry.buffered == slot(1)
    assert status["bufferedSlot"] == "2026-12-06T12:00:05Z"
    # The replica dies. The run of slot 0 ends while nobody holds the Job.
    status = folded(status, succeeded(first))
    successor = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE, policy="BufferOne")
    status, runs = fire(status, successor, slot(1) + timedelta(seconds=3))
    assert [(r.slot, r.trigger) for r in runs] == [(slot(1), "Schedule")]
    assert "bufferedSlot" not in status
    for run in runs:
        status = folded(status, succeeded(run))
        successor.sent.pop(run.run_id, None)
    status, runs = fire(status, successor, slot(2) + timedelta(milliseconds=5))
    assert [r.slot for r in runs] == [slot(2)]
    accounted(status, slots=3)


def test_a_skip_decided_again_by_the_next_holder_is_counted_once() -> None:
    """A replica that takes the Job over before the previous holder's last status write reached
    it decides the same slots again (the fault suite's shard hand-overs: Forbid over-counted
    skipped by 4 in 90 s); the status counts each slot once."""
    status: dict[str, Any] = {}
    entry = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE, policy="Forbid")
    status, runs = fire(status, entry, slot(0) + timedelta(milliseconds=5))
    stale = dict(status)  # what the next holder last saw
    for n in range(1, 4):
        status, _ = fire(status, entry, slot(n) + timedelta(milliseconds=5))
    assert status["counters"]["skipped"] == 3
    successor = entry_from(stale, catch_up=scheduling.CatchUpPolicy.NONE, policy="Forbid")
    successor.status_active = frozenset(r.run_id for r in runs)
    status, more = fire(status, successor, slot(3) + timedelta(milliseconds=500))
    assert more == []
    assert status["counters"]["skipped"] == 3


def test_a_result_folded_before_the_owners_missed_count_does_not_cancel_it() -> None:
    """The fault suite's API-server outage: the owner's writes wait, another replica folds the
    result of the owner's next on-time run first (both replicas fold results). The owner's
    missed count for the slots of the outage must still count (it did not, when the result
    moved lastHandledSlot past them: missed 0 for 3 slots not run)."""
    status, lost = run_before_crash(scheduling.CatchUpPolicy.NONE)
    status = folded(status, succeeded(lost))  # slots 0..4 ran and are recorded
    owner = entry_from(status, catch_up=scheduling.CatchUpPolicy.NONE)
    effects = plan.decide(owner, QUEUE, slot(7) + timedelta(milliseconds=5)).effects
    runs = [e for e in effects if isinstance(e, plan.Publish)]
    assert [r.slot for r in runs] == [slot(7)]
    status = folded(status, succeeded(runs[0]))  # by the other replica, first
    for effect in effects:
        if isinstance(effect, plan.Post):
            status = effect.mutation(status)
    status = fold.record_dispatch(
        status, run_id=runs[0].run_id, scheduled_at=slot(7), trigger="Schedule", limits=LIMITS
    )
    assert status["counters"]["missed"] == 2
    accounted(status, slots=8)


async def test_a_decision_of_a_replica_that_lost_the_shard_is_not_written() -> None:
    """The fault suite's API-server outage with a shard changing hands (Forbid +1, BufferOne
    -2 in the 10-minute soaks): the owner decides a slot (a skip) while the API server is down,
    so the write waits in its status writer; its shard's Lease runs out and the other replica
    takes the Job over, reads the status without that skip and decides the slot itself (it
    runs it: the first run has ended). The old owner's write must not land on top of
    it (it did: the slot was counted dispatched and skipped)."""
    from kubernetes import client

    from kadence_operator.statuswriter import StatusWriter

    all_ = scheduling.CatchUpPolicy.ALL
    status: dict[str, Any] = {}
    owner = entry_from(status, catch_up=all_, policy="Forbid")
    status, runs = fire(status, owner, slot(0) + timedelta(milliseconds=5))
    status = fold.record_dispatch(
        status, run_id=runs[0].run_id, scheduled_at=slot(0), trigger="Schedule", limits=LIMITS
    )
    owner.status_active = frozenset(r.run_id for r in runs)

    # The API server is down: the owner's writer holds its decision for slot 1.
    writer = StatusWriter(
        api=client.ApiClient(), group="kadence.io", version="v1alpha1", plural="jobs", interval=0
    )
    server = _ApiServer(status)
    server.down = True
    writer._api = server  # type: ignore[assignment]
    holds: list[bool | None] = [None]  # its shard Lease ran out: not known any more
    effects = plan.decide(owner, QUEUE, slot(1) + timedelta(milliseconds=5)).effects
    assert not [e for e in effects if isinstance(e, plan.Publish)]  # Forbid: slot 1 skipped
    for effect in effects:
        if isinstance(effect, plan.Post):
            writer.post("ns", "every5s", effect.mutation, guard=lambda: holds[0])
    await writer.flush_keys([("ns", "every5s")])
    assert server.patches == []

    # The first run ends; the other replica takes the shard, reads the status and decides.
    server.status = folded(server.status, succeeded(runs[0]))
    successor = entry_from(server.status, catch_up=all_, policy="Forbid")
    effects = plan.decide(successor, QUEUE, slot(1) + timedelta(seconds=3)).effects
    caught_up = [e for e in effects if isinstance(e, plan.Publish)]
    assert [r.slot for r in caught_up] == [slot(1)]  # late, within the grace: on time

    # The API server is back: the old owner's writer gets through, and learns who holds the
    # shard now.
    server.down, holds[0] = False, False
    await writer.flush_keys([("ns", "every5s")])
    status = server.status
    for effect in effects:
        if isinstance(effect, plan.Post):
            status = effect.mutation(status)
    for run in caught_up:
        status = fold.record_dispatch(
            status, run_id=run.run_id, scheduled_at=run.slot, trigger=run.trigger, limits=LIMITS
        )
        status = folded(status, succeeded(run))
    accounted(status, slots=2)


class _ApiServer:
    """The Job as the API server keeps it, for the status writer (:mod:`kadence_operator.kube`'s
    ``AsyncApi``: GET and merge PATCH of top-level status fields)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.version = 1
        self.patches: list[dict[str, Any]] = []
        self.down = False

    def _body(self) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": "every5s", "uid": UID}
        return {"metadata": {**meta, "resourceVersion": str(self.version)}, "status": self.status}

    async def get(self, path: str) -> dict[str, Any]:
        return self._body()

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ConnectionRefusedError("the API server is down")
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise AssertionError("a stale write")  # the writer re-reads on 409; not needed here
        self.patches.append(body["status"])
        merged = {**self.status}
        for key, value in body["status"].items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        self.status, self.version = merged, self.version + 1
        return self._body()
