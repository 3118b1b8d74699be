"""Properties of the pure fire decision (kadence_operator.jobs.plan).

* The armed path is a precomputed plan: whenever its version check passes
  (:func:`entry.runs_alone`), the full decision publishes exactly the armed run, counts nothing
  and cancels nothing.
* The decision reads the Job's view and never changes it.
* Every status a plan produces, and the fold of worker results onto it, validates against the
  ``JobStatus`` model key by key: a misspelt key would be pruned silently by the API server (the
  CRD's structural schema).
"""

from __future__ import annotations

import copy
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kadence.protocol import JobRef, OutputObject, RunError, RunResult, RunState
from kadence_operator import scheduling
from kadence_operator.api import Backfill
from kadence_operator.api.job import JobStatus
from kadence_operator.jobs import plan
from kadence_operator.jobs.entry import Armed, Entry, backfill_marker, runs_alone
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.results import fold

ANCHOR = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # a DST weekend in Europe
UID = "5b0c54c6-38a3-4cf3-9d8e-6f1f7c1e2a10"
QUEUE = QueueInfo("ns", "q", 4, 30.0, True)

schedules = st.one_of(
    st.sampled_from([1, 5, 60, 300, 3600]).map(
        lambda s: scheduling.Schedule(interval=timedelta(seconds=s), anchor=ANCHOR)
    ),
    st.sampled_from(["*/5 * * * *", "0 * * * *", "*/10 * * * * *", "30 2 * * *"]).flatmap(
        lambda cron: st.sampled_from(["UTC", "Europe/Berlin"]).map(
            lambda zone: scheduling.Schedule(cron=cron, time_zone=zone, anchor=ANCHOR)
        )
    ),
    st.just(
        scheduling.Schedule(
            interval=timedelta(seconds=10), jitter=timedelta(seconds=3), anchor=ANCHOR
        )
    ),
    st.just(scheduling.Schedule(cron="* * * * *", spread=scheduling.Spread.HASH, anchor=ANCHOR)),
)
run_ids = st.sets(st.sampled_from(["r-a", "r-b", "r-c"]), max_size=2)


@st.composite
def entries(draw: st.DrawFn, *, one_shot: bool = True) -> Entry:
    schedule = draw(st.none() | schedules) if one_shot else draw(schedules)
    entry = Entry(
        namespace="ns",
        name="job",
        uid=UID,
        generation=draw(st.integers(1, 3)),
        created=ANCHOR,
        spec_json=b"",
        schedule=schedule,
        shard=0,
    )
    entry.queue_name = "q"
    entry.policy = draw(st.sampled_from(list(scheduling.ConcurrencyPolicy)))
    entry.catch_up = draw(st.sampled_from(list(scheduling.CatchUpPolicy)))
    entry.window = draw(st.none() | st.sampled_from([timedelta(minutes=1), timedelta(hours=2)]))
    entry.grace = draw(
        st.sampled_from([scheduling.DEFAULT_GRACE, timedelta(0), timedelta(seconds=7)])
    )
    entry.suspend = draw(st.booleans())
    entry.status_active = frozenset(draw(run_ids))
    entry.sent = dict.fromkeys(draw(run_ids), 0.0)
    entry.ended = dict.fromkeys(draw(run_ids), 0.0)
    entry.trigger = draw(st.sampled_from([None, "t1", "t2"]))
    entry.last_trigger = draw(st.sampled_from([None, "t1"]))
    entry.status_trigger = draw(st.sampled_from([None, "t1"]))
    entry.dispatched_once = draw(st.booleans())
    entry.ready_written = draw(st.booleans())
    entry.queue_problem = draw(st.sampled_from([None, 'spec.queue: Queue "q" not found in ns']))
    if schedule is not None:
        seconds = draw(st.integers(0, 3 * 86400))
        slot = scheduling.previous_fire_time(schedule, at_or_before=ANCHOR + timedelta(0, seconds))
        entry.last_slot = draw(st.sampled_from([None, slot]))
        entry.buffered = draw(st.sampled_from([None, slot]))
        if draw(st.booleans()):
            entry.backfill = Backfill.model_validate(
                {"from": ANCHOR, "to": ANCHOR + timedelta(minutes=draw(st.integers(1, 30)))}
            )
            if draw(st.booleans()):
                entry.backfill_done = backfill_marker(entry.backfill)
    return entry


nows = st.integers(0, 4 * 86400 * 1000).map(lambda ms: ANCHOR + timedelta(milliseconds=ms))
queues = st.sampled_from([QUEUE, None, QueueInfo("ns", "q", 4, 30.0, False, "no stream")])


def _posts(effects: tuple[plan.Effect, ...] | list[plan.Effect]) -> list[Any]:
    return [
        (e.mutation.func, e.mutation.keywords, e.supersede)  # type: ignore[attr-defined]
        for e in effects
        if isinstance(e, plan.Post)
    ]


@settings(max_examples=400, deadline=None)
@given(
    entries(one_shot=False),
    st.integers(0, 3 * 86400),
    st.integers(0, 900) | st.integers(0, 90_000),
)
def test_the_armed_path_publishes_what_the_decision_would(
    entry: Entry, seconds: int, late_ms: int
) -> None:
    # What lets a Job be armed at all (its last fire ended on time, nothing pending).
    entry.suspend = False
    entry.ready_written = True
    entry.queue_problem = None
    entry.trigger = None
    entry.buffered = None
    entry.backfill = None
    schedule = entry.schedule
    assert schedule is not None
    last = scheduling.previous_fire_time(schedule, at_or_before=ANCHOR + timedelta(0, seconds))
    assert last is not None
    entry.last_slot = last
    nxt = scheduling.next_fire_time(schedule, after=last)
    assert nxt is not None
    planned = scheduling.plan_slot(
        schedule, job_uid=entry.uid, last_slot=last, slot=nxt, grace=entry.grace
    )
    assert planned is not None
    run_id = scheduling.run_id_for_slot(entry.uid, nxt)
    armed = Armed(planned, run_id, "subject", b"", 0, entry.generation, QUEUE)
    now = planned.due + timedelta(milliseconds=late_ms)
    assume(runs_alone(entry, armed, QUEUE, now))
    effects = plan.decide(entry, QUEUE, now).effects
    assert [e for e in effects if isinstance(e, plan.Publish)] == [
        plan.Publish(run_id, planned.slot, "Schedule", planned.due)
    ]
    assert not [e for e in effects if isinstance(e, plan.Cancel | plan.Count | plan.Warn)]
    assert plan.Update("last_slot", planned.slot) in effects
    # What the armed path does after the ack is what the decision does after its publish.
    after = effects[effects.index(plan.Update("last_slot", planned.slot)) + 1 :]
    armed_after = plan.plan_next(
        entry, schedule, now, last_slot=planned.slot, plan_now=now, arm=True
    )
    assert [e for e in after if not isinstance(e, plan.Post)] == [
        e for e in armed_after if not isinstance(e, plan.Post)
    ]
    assert _posts(after) == _posts(armed_after)


@settings(max_examples=300, deadline=None)
@given(entries(), queues, nows)
def test_the_decision_does_not_change_the_view(
    entry: Entry, queue: QueueInfo | None, now: datetime
) -> None:
    before = copy.deepcopy(entry)
    plan.decide(entry, queue, now)
    assert entry == before


def _unknown_keys(data: Any, dumped: Any, path: str = "status") -> list[str]:
    """Keys of ``data`` that the model dropped (``dumped``: the model's dump of ``data``)."""
    if isinstance(data, dict):
        lost = [f"{path}.{key}" for key in data if key not in dumped]
        for key in data:
            if key in dumped:
                lost += _unknown_keys(data[key], dumped[key], f"{path}.{key}")
        return lost
    if isinstance(data, list):
        return [
            key
            for i, (a, b) in enumerate(zip(data, dumped, strict=True))
            for key in _unknown_keys(a, b, f"{path}[{i}]")
        ]
    return []


def _apply(status: fold.Status, effects: tuple[plan.Effect, ...], entry: Entry) -> fold.Status:
    for effect in effects:
        if isinstance(effect, plan.Post):
            status = effect.mutation(status)
        elif isinstance(effect, plan.Publish):
            status = fold.record_dispatch(
                status,
                run_id=effect.run_id,
                scheduled_at=effect.slot,
                trigger=effect.trigger,
                limits=entry.limits,
            )
    return status


results = st.builds(
    lambda state, attempt, outputs, error: (state, attempt, outputs, error),
    st.sampled_from(list(RunState)),
    st.integers(1, 3),
    st.lists(st.integers(0, 10**6), max_size=2),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(entries(), queues, nows, st.integers(1, 4), st.lists(results, max_size=4))
def test_every_status_a_plan_writes_fits_the_job_status_model(
    entry: Entry,
    queue: QueueInfo | None,
    now: datetime,
    fires: int,
    reports: list[tuple[RunState, int, list[int], bool]],
) -> None:
    """The fires' mutations and the fold of worker results on the runs they dispatched."""
    status: fold.Status = {}
    for i in range(fires):  # a few fires in a row, each on the status the last one left
        decided = plan.decide(entry, queue, now + timedelta(seconds=7 * i))
        status = _apply(status, decided.effects + decided.always, entry)
        for effect in decided.effects:
            if isinstance(effect, plan.Update):
                setattr(entry, effect.field, effect.value)
    run_ids = [run["runId"] for run in status.get("runs") or []]
    for n, (state, attempt, sizes, failed) in enumerate(reports):
        if not run_ids:
            break
        result = RunResult(
            run_id=run_ids[n % len(run_ids)],
            attempt=attempt,
            job=JobRef(namespace="ns", name="job", uid=UID),
            state=state,
            started_at=now,
            finished_at=now + timedelta(seconds=1),
            outputs=tuple(
                OutputObject(uri=f"s3://b/k{i}", size=size, etag="e")
                for i, size in enumerate(sizes)
            ),
            error=RunError(type="ValueError", message="boom") if failed else None,
            fencing_token=attempt,
            worker="w-1",
        )
        outcome = fold.fold_result(
            status, result, limits=entry.limits, generation=entry.generation, now=now
        )
        status = outcome.status
    dumped = JobStatus.model_validate(status).model_dump(
        by_alias=True, exclude_unset=True, mode="json"
    )
    assert _unknown_keys(status, dumped) == []


def test_a_misspelt_key_is_caught() -> None:
    status = fold.set_field({}, name="lastTriger", value="x")
    dumped = JobStatus.model_validate(status).model_dump(by_alias=True, exclude_unset=True)
    assert _unknown_keys(status, dumped) == ["status.lastTriger"]


def test_a_missing_queue_is_reported_once_and_looked_at_again() -> None:
    entry = Entry("ns", "job", UID, 1, ANCHOR, b"", None, 0, queue_name="q")
    first = plan.decide(entry, None, ANCHOR).effects
    assert [type(e) for e in first] == [plan.Update, plan.Post, plan.Warn, plan.Wake]
    for effect in first:
        if isinstance(effect, plan.Update):
            setattr(entry, effect.field, effect.value)
    again = plan.decide(entry, None, ANCHOR + timedelta(seconds=10)).effects
    assert again == (plan.Wake(ANCHOR + timedelta(seconds=20)),)


def test_ready_is_written_after_the_runs_also_when_a_publish_fails() -> None:
    entry = Entry("ns", "job", UID, 1, ANCHOR, b"", None, 0, queue_name="q")
    decided = plan.decide(entry, QUEUE, ANCHOR)
    assert isinstance(decided.effects[2], plan.Publish)  # the one-shot run
    (ready,) = decided.always
    assert isinstance(ready, plan.Post)
    assert isinstance(ready.mutation, functools.partial)
    assert ready.mutation.func is fold.set_ready
    assert ready.mutation.keywords["ok"] is True


def test_a_missed_count_from_a_stale_view_counts_only_what_nobody_counted() -> None:
    """Soak seed 3 counted one slot more than the schedule had (missed), after the Job's shard
    went from one replica to the other and back within seconds. A replica decides from its own
    view of the Job; when another replica's count of the same outage reached the status first,
    the range overlaps it: the slots that count already must not count again."""

    def replica(last_slot: datetime) -> Entry:
        entry = Entry("ns", "job", UID, 1, ANCHOR, b"", None, 0, queue_name="q")
        entry.schedule = scheduling.Schedule(interval=timedelta(seconds=10), anchor=ANCHOR)
        entry.catch_up = scheduling.CatchUpPolicy.NONE
        entry.grace = timedelta(0)
        entry.ready_written = True
        entry.last_slot = last_slot
        return entry

    status: fold.Status = {"lastHandledSlot": "2026-03-28T23:00:00Z"}
    # One replica counts the slots :10, :20 and :30 missed (decided at :35, written first) ...
    first = replica(ANCHOR)
    status = _apply(
        status, plan.decide(first, QUEUE, ANCHOR + timedelta(seconds=35)).effects, first
    )
    assert status["counters"]["missed"] == 3
    # ... the other, whose view still ends at :00, counts (:00, :50] at :55: only :40 and :50.
    second = replica(ANCHOR)
    at = ANCHOR + timedelta(seconds=55)
    status = _apply(status, plan.decide(second, QUEUE, at).effects, second)
    assert status["counters"]["missed"] == 5
    assert status["lastHandledSlot"] == "2026-03-28T23:00:50Z"
    # And a Catch-up One decision runs its newest late slot and counts the rest only.
    third = replica(ANCHOR)
    third.catch_up = scheduling.CatchUpPolicy.ONE
    status = {"lastHandledSlot": "2026-03-28T23:00:30Z", "counters": {"missed": 3}}
    status = _apply(status, plan.decide(third, QUEUE, at).effects, third)
    assert status["counters"]["missed"] == 4  # :40; :50 runs
    assert [r["scheduledAt"] for r in status["runs"]] == ["2026-03-28T23:00:50Z"]
