"""The invariant checker on made-up snapshots (pure): a clean Job passes every check, and each
known kind of defect fails exactly the checks that should catch it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence.protocol import JobRef, OutputObject, RunResult, RunState
from kadence_operator.scheduling import run_id_for_slot
from tests.faults import invariants, sources, workload

UID = "uid-1"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(seconds=10)
PLAN = workload.JobPlan("job", "q", 2, "Allow", "All", (0.0, 0.0))
SLOTS = workload.slots(start_at=START, end_at=END, period=PLAN.period)
JOB = JobRef(namespace="default", name="job", uid=UID)


def uri(run_id: str) -> str:
    return f"s3://kadence-outputs/default/job/{run_id}/out.json"


def succeeded(slot: datetime, *, attempt: int = 1, etag: str = "e1") -> RunResult:
    run_id = run_id_for_slot(UID, slot)
    return RunResult(
        run_id=run_id,
        attempt=attempt,
        job=JOB,
        state=RunState.SUCCEEDED,
        scheduled_at=slot,
        outputs=(OutputObject(uri=uri(run_id), size=10, etag=etag),),
    )


def record(result: RunResult, *, trigger: str | None = "Schedule") -> dict[str, Any]:
    body: dict[str, Any] = {
        "runId": result.run_id,
        "state": result.state.value,
        "output": [{"uri": o.uri, "size": o.size, "etag": o.etag} for o in result.outputs],
    }
    if trigger:
        body["trigger"] = trigger
    return body


def view(runs: list[dict[str, Any]], **counters: int) -> sources.JobView:
    return sources.JobView(
        name="job",
        uid=UID,
        counters=counters,
        runs=runs,
        active=[],
        next_run=None,
        annotations={},
    )


def objects_of(results: list[RunResult]) -> dict[str, sources.ObjectView]:
    return {o.uri: sources.ObjectView(o.uri, o.size, o.etag) for r in results for o in r.outputs}


def failed_checks(
    job: sources.JobView,
    results: list[RunResult],
    objects: dict[str, sources.ObjectView],
    plan: workload.JobPlan = PLAN,
) -> set[str]:
    verdicts = invariants.check_job(plan, job, results, objects, start_at=START, end_at=END)
    return {v.invariant for v in verdicts if not v.ok}


def test_a_clean_job_passes_every_check() -> None:
    results = [succeeded(slot) for slot in SLOTS]
    job = view([record(r) for r in results], dispatched=6, succeeded=6)
    assert len(SLOTS) == 6  # [start, end] with both ends included
    assert failed_checks(job, results, objects_of(results)) == set()


def test_a_run_published_before_a_crash_and_counted_missed() -> None:
    """The defect #29 describes: the run ran, but the status counts it missed, not dispatched,
    and its record (made from the result) has no trigger."""
    results = [succeeded(slot) for slot in SLOTS]
    runs = [record(r) for r in results[:-1]] + [record(results[-1], trigger=None)]
    job = view(runs, dispatched=5, missed=1, succeeded=6)
    assert failed_checks(job, results, objects_of(results)) == {
        "slots: ran (stream)+skipped+missed = slots",
        "run records have a trigger (status)",
        "counters.dispatched = stream",
    }


def test_a_slot_counted_missed_twice() -> None:
    results = [succeeded(slot) for slot in SLOTS[:4]]
    job = view([record(r) for r in results], dispatched=4, missed=3, succeeded=4)
    assert failed_checks(job, results, objects_of(results)) == {
        "slots: dispatched+skipped+missed = slots",
        "slots: ran (stream)+skipped+missed = slots",
    }


def test_a_slot_lost_without_a_count() -> None:
    results = [succeeded(slot) for slot in SLOTS[:5]]
    job = view([record(r) for r in results], dispatched=5, succeeded=5)
    assert failed_checks(job, results, objects_of(results)) == {
        "slots: dispatched+skipped+missed = slots",
        "slots: ran (stream)+skipped+missed = slots",
    }


@pytest.mark.parametrize(
    ("second", "caught"),
    [
        pytest.param(
            RunState.SUCCEEDED, "no run Succeeded twice (stream)", id="succeeded-by-two-attempts"
        ),
        pytest.param(RunState.FAILED, "one final state per run (stream)", id="two-final-states"),
    ],
)
def test_a_run_ending_twice(second: RunState, caught: str) -> None:
    results = [succeeded(slot) for slot in SLOTS]
    again = results[0].model_copy(update={"attempt": 2, "state": second, "outputs": ()})
    job = view([record(r) for r in results], dispatched=6, succeeded=6)
    forbid = workload.JobPlan("job", "q", 2, "Forbid", "All", (0.0, 0.0))
    assert failed_checks(job, [*results, again], objects_of(results), forbid) == {caught}


def test_allow_is_at_least_once() -> None:
    """Allow holds no Lease: a run finished twice (a worker frozen past ackWait) is reported,
    not a violation, as long as the status records it once."""
    results = [succeeded(slot) for slot in SLOTS]
    again = results[0].model_copy(update={"attempt": 2, "outputs": ()})
    job = view([record(r) for r in results], dispatched=6, succeeded=6)
    assert failed_checks(job, [*results, again], objects_of(results)) == set()


def test_an_output_overwritten_by_a_later_attempt() -> None:
    results = [succeeded(slot) for slot in SLOTS]
    job = view([record(r) for r in results], dispatched=6, succeeded=6)
    objects = objects_of(results)
    target = results[2].outputs[0].uri
    objects[target] = sources.ObjectView(target, 10, "e2", writer="attempt 2 by w1")
    assert failed_checks(job, results, objects) == {"outputs not overwritten (etag, S3)"}


def test_a_missing_output_and_a_run_left_active() -> None:
    results = [succeeded(slot) for slot in SLOTS]
    job = view([record(r) for r in results], dispatched=6, succeeded=6)
    job.active.append({"runId": results[0].run_id})
    objects = objects_of(results)
    gone = results[1].outputs[0].uri
    objects[gone] = sources.ObjectView(gone, None, None)
    assert failed_checks(job, results, objects) == {
        "outputs exist with reported size (S3)",
        "settled: no active or unfinished run",
    }


def test_history_trimmed_below_the_limits() -> None:
    """Records dropped from status.runs although historyLimits (100/100) would keep them."""
    results = [succeeded(slot) for slot in SLOTS]
    job = view([record(r) for r in results[-3:]], dispatched=6, succeeded=6)
    assert failed_checks(job, results, objects_of(results)) == {
        "history kept per historyLimits (status)"
    }
