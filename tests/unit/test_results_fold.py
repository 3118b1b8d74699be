"""The status fold: each table row is (status before, events, expected status fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence.protocol import JobRef, OutputObject, RunError, RunResult, RunState
from kadence_operator.results import fold
from kadence_operator.results.conditions import condition, set_condition

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SLOT = datetime(2026, 11, 25, 11, 59, 0, tzinfo=UTC)
JOB = JobRef(namespace="ns", name="daily", uid="u-1")
LIMITS = (3, 3)


def result(state: RunState, *, run: str = "r1", attempt: int = 1, **extra: Any) -> RunResult:
    return RunResult(
        run_id=run,
        attempt=attempt,
        job=JOB,
        state=state,
        scheduled_at=SLOT,
        started_at=datetime(2026, 11, 25, 11, 59, 1, tzinfo=UTC),
        finished_at=datetime(2026, 11, 25, 11, 59, 9, tzinfo=UTC),
        worker="w-1",
        **extra,
    )


def dispatched(*runs: str) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for run in runs:
        status = fold.record_dispatch(
            status, run_id=run, scheduled_at=SLOT, trigger="Schedule", limits=LIMITS
        )
    return status


def apply(status: dict[str, Any], *results: RunResult) -> tuple[dict[str, Any], list[bool]]:
    accepted = []
    for item in results:
        outcome = fold.fold_result(status, item, limits=LIMITS, generation=4, now=NOW)
        status = outcome.status
        accepted.append(outcome.accepted)
    return status, accepted


def test_dispatch_records_a_pending_active_run_once() -> None:
    status = dispatched("r1", "r1")
    assert status["counters"]["dispatched"] == 1
    assert status["runs"] == [
        {
            "runId": "r1",
            "trigger": "Schedule",
            "scheduledAt": "2026-11-25T11:59:00Z",
            "attempts": 0,
            "state": "Pending",
        }
    ]
    assert status["active"] == [
        {"runId": "r1", "attempt": 1, "scheduledAt": "2026-11-25T11:59:00Z"}
    ]
    assert status["lastScheduleTime"] == "2026-11-25T11:59:00Z"


def test_manual_trigger_does_not_move_last_schedule_time() -> None:
    status = fold.record_dispatch(
        {}, run_id="t-1", scheduled_at=SLOT, trigger="Manual", limits=LIMITS
    )
    assert "lastScheduleTime" not in status
    assert status["counters"]["dispatched"] == 1


OUTPUT = OutputObject(uri="s3://out/ns/daily/r1/result.json", size=12, etag="abc")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [result(RunState.RUNNING)],
            {"state": "Running", "attempts": 1, "active": 1, "succeeded": 0},
            id="running",
        ),
        pytest.param(
            [result(RunState.RUNNING), result(RunState.SUCCEEDED, outputs=(OUTPUT,))],
            {"state": "Succeeded", "attempts": 1, "active": 0, "succeeded": 1, "output": 1},
            id="running-then-succeeded",
        ),
        pytest.param(
            [result(RunState.SUCCEEDED, outputs=(OUTPUT,))] * 2,
            {"state": "Succeeded", "active": 0, "succeeded": 1, "accepted": [True, False]},
            id="same-result-twice-is-idempotent",
        ),
        pytest.param(
            [
                result(RunState.RETRYING, error=RunError(type="IOError", message="s3 down")),
                result(RunState.RUNNING, attempt=2),
                result(RunState.FAILED, attempt=2, error=RunError(type="IOError", message="x")),
            ],
            {"state": "Failed", "attempts": 2, "active": 0, "failed": 1, "succeeded": 0},
            id="retry-then-fail",
        ),
        pytest.param(
            [result(RunState.RUNNING, attempt=2), result(RunState.FAILED, attempt=1)],
            {"state": "Running", "attempts": 2, "active": 1, "accepted": [True, False]},
            id="older-attempt-rejected",
        ),
        pytest.param(
            [
                result(RunState.RUNNING, attempt=2, fencing_token=5),
                result(RunState.SUCCEEDED, attempt=2, fencing_token=4),
            ],
            {"state": "Running", "active": 1, "succeeded": 0, "accepted": [True, False]},
            id="stale-fencing-token-rejected",
        ),
        pytest.param(
            [result(RunState.DEAD_LETTERED, error=RunError(type="UnknownTask", message="t"))],
            {"state": "DeadLettered", "failed": 1, "deadLettered": 1, "active": 0},
            id="dead-lettered",
        ),
        pytest.param(
            [result(RunState.TIMED_OUT)],
            {"state": "TimedOut", "failed": 1, "active": 0},
            id="timed-out",
        ),
    ],
)
def test_fold_table(events: list[RunResult], expected: dict[str, Any]) -> None:
    status, accepted = apply(dispatched("r1"), *events)
    run = next(r for r in status["runs"] if r["runId"] == "r1")
    assert run["state"] == expected["state"]
    if "attempts" in expected:
        assert run["attempts"] == expected["attempts"]
    assert len(status["active"]) == expected["active"]
    for counter in ("succeeded", "failed", "deadLettered"):
        if counter in expected:
            assert status["counters"][counter] == expected[counter]
    if "output" in expected:
        assert run["output"] == [{"uri": OUTPUT.uri, "size": 12, "etag": "abc"}]
    if "accepted" in expected:
        assert accepted == expected["accepted"]


def test_success_sets_times_condition_and_result() -> None:
    status, _ = apply(dispatched("r1"), result(RunState.SUCCEEDED))
    assert status["lastCompletionTime"] == "2026-11-25T11:59:09Z"
    assert status["lastSuccessfulTime"] == "2026-11-25T11:59:09Z"
    assert status["lastResult"] == "Succeeded"
    cond = condition(status["conditions"], "LastRunSucceeded")
    assert cond is not None
    assert cond["status"] == "True"
    assert cond["observedGeneration"] == 4


def test_failure_names_the_error_in_the_condition() -> None:
    failed = result(RunState.FAILED, error=RunError(type="ValueError", message="bad input"))
    status, _ = apply(dispatched("r1"), failed)
    cond = condition(status["conditions"], "LastRunSucceeded")
    assert cond is not None
    assert cond["status"] == "False"
    assert cond["reason"] == "Failed"
    assert "ValueError: bad input" in cond["message"]
    assert "lastSuccessfulTime" not in status


def test_history_limits_keep_unfinished_and_newest_finished() -> None:
    status: dict[str, Any] = {}
    for minute in range(6):
        slot = datetime(2026, 11, 25, 11, minute, tzinfo=UTC)
        status = fold.record_dispatch(
            status, run_id=f"r{minute}", scheduled_at=slot, trigger="Schedule", limits=(2, 1)
        )
    for minute in range(5):  # r5 stays pending
        state = RunState.SUCCEEDED if minute % 2 == 0 else RunState.FAILED
        done = RunResult(run_id=f"r{minute}", attempt=1, job=JOB, state=state)
        status = fold.fold_result(status, done, limits=(2, 1), generation=1, now=NOW).status
    assert [r["runId"] for r in status["runs"]] == ["r5", "r4", "r3", "r2"]
    assert [r["state"] for r in status["runs"]] == ["Pending", "Succeeded", "Failed", "Succeeded"]


def test_result_for_unknown_run_is_recorded() -> None:
    status, accepted = apply({}, result(RunState.SUCCEEDED, run="adhoc"))
    assert accepted == [True]
    assert status["runs"][0]["runId"] == "adhoc"
    assert status["counters"]["succeeded"] == 1


def test_condition_transition_time_changes_only_with_status() -> None:
    first = set_condition(
        [], type_="Ready", status=True, reason="A", message="m", now=NOW, generation=1
    )
    later = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    same = set_condition(
        first, type_="Ready", status=True, reason="B", message="n", now=later, generation=2
    )
    flipped = set_condition(
        same, type_="Ready", status=False, reason="C", message="o", now=later, generation=2
    )
    assert same[0]["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    assert same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "2026-11-25T13:00:00Z"


def test_no_step_modifies_the_status_it_is_given() -> None:
    """The fold shares unchanged parts with its input, so it must never write into them."""
    import copy

    steps: list[Any] = [
        lambda s: fold.record_missed(s, missed=1, after=None, through=SLOT - timedelta(minutes=1)),
        lambda s: fold.record_dispatch(
            s, run_id="r1", scheduled_at=SLOT, trigger="Schedule", limits=LIMITS
        ),
        lambda s: fold.record_dispatch(
            s, run_id="r2", scheduled_at=NOW, trigger="Manual", limits=LIMITS
        ),
        lambda s: fold.record_skipped(s, skipped=2, through=NOW),
        lambda s: fold.record_passed(s, through=NOW),
        lambda s: (
            fold.fold_result(
                s, result(RunState.RUNNING, fencing_token=3), limits=LIMITS, generation=4, now=NOW
            ).status
        ),
        lambda s: (
            fold.fold_result(
                s,
                result(RunState.RETRYING, attempt=2, error=RunError(type="E", message="m")),
                limits=LIMITS,
                generation=4,
                now=NOW,
            ).status
        ),
        lambda s: (
            fold.fold_result(
                s,
                result(RunState.SUCCEEDED, attempt=2, outputs=(OUTPUT,)),
                limits=LIMITS,
                generation=4,
                now=NOW,
            ).status
        ),
        lambda s: (
            fold.fold_result(
                s,
                result(RunState.FAILED, run="r2", error=RunError(type="E", message="m")),
                limits=LIMITS,
                generation=4,
                now=NOW,
            ).status
        ),
        lambda s: (
            fold.fold_result(  # rejected: already final
                s, result(RunState.RUNNING), limits=LIMITS, generation=4, now=NOW
            ).status
        ),
    ]
    status: dict[str, Any] = {}
    for step in steps:
        before = copy.deepcopy(status)
        after = step(status)
        assert status == before
        status = after
    assert status["counters"] == {
        "dispatched": 2,
        "succeeded": 1,
        "failed": 1,
        "skipped": 2,
        "missed": 1,
        "deadLettered": 0,
    }
    assert status["active"] == []
