"""Every change the operator makes to a Job's status, as pure functions (the status fold).

This is a purely computational module with no side-effects. Every function takes the status as a
plain dict (the camelCase body the API server stores) and returns a new dict; the status writer
applies them in order and sends one PATCH. The input is never modified: the new status shares the
parts that did not change with it and copies only what changes (a deep copy of the whole status
for every dispatch and result was most of the operator's CPU at 1,000 runs a second).

The fold is idempotent — the same result twice gives the same status — and it rejects results
from the past: an attempt older than one already recorded, a fencing token smaller than the
largest seen for the run (a stale Lease holder's late report), or anything for a run already
finished.

Every slot is counted once, also across operator crashes. ``lastHandledSlot`` is the newest slot
dealt with (dispatched, skipped or counted missed); catch-up after a restart starts after it. An
operator can die after JetStream stored a run and before its dispatch record reached the status
(the writer coalesces for up to one status interval): its successor then counts that slot
missed. The run's result, which carries its slot and trigger, corrects that: a result for a run
the status never saw is recorded as dispatched with its trigger, and a slot run at or before
``lastHandledSlot`` is taken out of ``missed``. In the other order — the result folded before the
successor's missed count — :func:`record_missed` leaves out the slots already recorded as run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kadence.protocol import RunResult, RunState
from kadence_operator import timefmt
from kadence_operator.results.conditions import set_condition

Status = dict[str, Any]

#: Run states that end a run.
FINAL_STATES = frozenset(
    {"Succeeded", "Failed", "TimedOut", "Cancelled", "Skipped", "DeadLettered"}
)
_FAILED_LIKE = frozenset({"Failed", "TimedOut", "Cancelled", "DeadLettered"})


def _ts(moment: datetime | None) -> str | None:
    return timefmt.rfc3339(moment) if moment is not None else None


_COUNTERS = ("dispatched", "succeeded", "failed", "skipped", "missed", "deadLettered")
#: Triggers of runs that stand for a slot of the schedule (their run id is the slot's).
_SLOT_TRIGGERS = frozenset({"Schedule", "CatchUp", "Backfill"})


def _counters(new: Status) -> dict[str, int]:
    """A fresh copy of ``new``'s counters (all keys present), stored in ``new``."""
    counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
    counters.update(new.get("counters") or {})
    new["counters"] = counters
    return counters


def _later(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)  # RFC 3339 UTC strings of one format order like the instants


def trim_runs(runs: list[dict[str, Any]], *, succeeded: int, failed: int) -> list[dict[str, Any]]:
    """Keep unfinished runs, the newest ``succeeded`` successes and ``failed`` other endings."""
    kept: list[dict[str, Any]] = []
    wins = losses = 0
    for run in runs:  # newest first
        state = run.get("state")
        if state == "Succeeded":
            wins += 1
            if wins > succeeded:
                continue
        elif state in FINAL_STATES:
            losses += 1
            if losses > failed:
                continue
        kept.append(run)
    return kept


def _sort_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (r.get("scheduledAt") or "", r["runId"]), reverse=True)


def record_dispatch(
    status: Status,
    *,
    run_id: str,
    scheduled_at: datetime,
    trigger: str,
    limits: tuple[int, int],
) -> Status:
    """A run was acknowledged by JetStream: it is Pending and active. Idempotent per ``run_id``."""
    new = dict(status)
    runs: list[dict[str, Any]] = list(status.get("runs") or [])
    if any(r.get("runId") == run_id for r in runs):
        return new
    slot = _ts(scheduled_at)
    runs.append(
        {
            "runId": run_id,
            "trigger": trigger,
            "scheduledAt": slot,
            "attempts": 0,
            "state": "Pending",
        }
    )
    new["runs"] = trim_runs(_sort_runs(runs), succeeded=limits[0], failed=limits[1])
    active: list[dict[str, Any]] = list(status.get("active") or [])
    if not any(a.get("runId") == run_id for a in active):
        active.append({"runId": run_id, "attempt": 1, "scheduledAt": slot})
    new["active"] = active
    _counters(new)["dispatched"] += 1
    _scheduled(new, trigger, slot)
    return new


def _scheduled(new: Status, trigger: str | None, slot: str | None, *, handled: bool = True) -> None:
    """A run of ``slot`` was dispatched: move ``lastScheduleTime`` and (``handled``)
    ``lastHandledSlot``.

    They are where catch-up starts after a restart or a fail-over: a backfill of last month must
    not make every slot since then look missed, nor a manual run move them.
    """
    if trigger in ("Schedule", "CatchUp"):
        new["lastScheduleTime"] = _later(new.get("lastScheduleTime"), slot)
        if handled:
            new["lastHandledSlot"] = _later(new.get("lastHandledSlot"), slot)


def record_skipped(status: Status, *, skipped: int = 1, through: datetime | None = None) -> Status:
    """``skipped`` slots were not run because of the concurrency policy (or a suspend); the
    newest of them is ``through`` (None: a buffered slot dropped, already handled).

    Idempotent by ``through``: a slot at or before ``lastHandledSlot`` was dealt with already
    (the same fire retried, or a replica that took the Job over before the previous holder's
    last status write reached it decided it again).
    """
    last = status.get("lastHandledSlot")
    if through is not None and last is not None and last >= _ts(through):
        return status
    new = dict(status)
    _counters(new)["skipped"] += skipped
    if through is not None:
        new["lastHandledSlot"] = _later(new.get("lastHandledSlot"), _ts(through))
    return new


def set_buffered(status: Status, *, slot: datetime | None) -> Status:
    """BufferOne holds ``slot`` back until the active run ends (it counts as handled: the next
    replica finds it here); None: the held slot was dispatched or dropped."""
    new = dict(status)
    if slot is None:
        new.pop("bufferedSlot", None)
    else:
        new["bufferedSlot"] = _ts(slot)
        new["lastHandledSlot"] = _later(new.get("lastHandledSlot"), _ts(slot))
    return new


def drop_buffered(status: Status, *, slot: datetime) -> Status:
    """The held slot ``slot`` is dropped (a newer slot superseded it, or the Job was suspended):
    it counts as skipped. Only while the status still holds it: a replica that took the Job over
    with an older status may drop a slot its previous holder dropped or ran already."""
    if status.get("bufferedSlot") != _ts(slot):
        return status
    new = dict(status)
    new.pop("bufferedSlot")
    _counters(new)["skipped"] += 1
    return new


def record_passed(status: Status, *, through: datetime) -> Status:
    """The slots up to ``through`` passed while the Job was suspended: handled, not counted."""
    return {**status, "lastHandledSlot": _later(status.get("lastHandledSlot"), _ts(through))}


def record_missed(
    status: Status,
    *,
    missed: int,
    after: datetime | None,
    through: datetime,
    missed_after: Callable[[datetime], int] | None = None,
) -> Status:
    """``missed`` slots in ``(after, through]`` were due while no replica could run them (or
    later than the catch-up policy runs) and are not run.

    Idempotent: a count whose ``through`` is not newer than ``lastHandledSlot`` was made
    already. A slot of the range already recorded as run (its result came in before this count:
    the previous operator published it and died before recording it) is not missed.

    A ``lastHandledSlot`` inside the range means another decision dealt with its start since
    this one was made (a replica that held the Job's shard meanwhile, whose write reached the
    status first): only the slots after it count then, ``missed_after(lastHandledSlot)`` of
    them (the decision's count of its missed slots after an instant). Without it, a slot
    counted missed there was counted a second time here.
    """
    last = status.get("lastHandledSlot")
    end = _ts(through)
    assert end is not None
    if last is not None and last >= end:
        return status
    start = _ts(after)
    if last is not None and missed_after is not None and (start is None or last > start):
        missed, start = missed_after(datetime.fromisoformat(last)), last
    ran = sum(
        1
        for run in status.get("runs") or []
        if run.get("trigger") in _SLOT_TRIGGERS
        and (start is None or (run.get("scheduledAt") or "") > start)
        and (run.get("scheduledAt") or "") <= end
    )
    new = dict(status)
    _counters(new)["missed"] += max(0, missed - ran)
    new["lastHandledSlot"] = end
    return new


def set_field(status: Status, *, name: str, value: Any) -> Status:
    """Set one top-level field (``lastTrigger``, ``backfill``)."""
    return {**status, name: value}


def set_ready(
    status: Status,
    *,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    extra: Status | None = None,
) -> Status:
    """The ``Ready`` condition (``Valid``, ``QueueNotReady``, ``InvalidSpec``, ...) with the
    generation it describes, and ``extra`` top-level fields beside it."""
    return {
        **status,
        **(extra or {}),
        "observedGeneration": generation,
        "conditions": set_condition(
            status.get("conditions", []),
            type_="Ready",
            status=ok,
            reason=reason,
            message=message,
            now=now,
            generation=generation,
        ),
    }


def record_next_run(
    status: Status, *, next_run: datetime | None, suspended: bool, generation: int, now: datetime
) -> Status:
    """The Job's next slot (``None``: no further slots) and its ``Scheduled``/``Suspended``
    conditions."""
    new = dict(status)
    if next_run is None:
        new.pop("nextRunTime", None)
    else:
        new["nextRunTime"] = timefmt.rfc3339(next_run)
    conditions = set_condition(
        status.get("conditions", []),
        type_="Scheduled",
        status=next_run is not None and not suspended,
        reason="Suspended" if suspended else ("NextRunPlanned" if next_run else "NoMoreRuns"),
        message=f"next run at {timefmt.rfc3339(next_run)}" if next_run else "no further slots",
        now=now,
        generation=generation,
    )
    new["conditions"] = set_condition(
        conditions,
        type_="Suspended",
        status=suspended,
        reason="Suspended" if suspended else "Active",
        message="spec.suspend is true" if suspended else "scheduling is active",
        now=now,
        generation=generation,
    )
    new["observedGeneration"] = generation
    return new


def _recovered(new: Status, run: dict[str, Any]) -> None:
    """Count a run first seen in a result as dispatched; if its slot was counted missed by an
    operator that did not know it had been published, it was not missed.

    It moves ``lastScheduleTime`` but not ``lastHandledSlot``: that one only the Job's owner
    moves, in the order of its decisions, so that its missed and skipped counts can check by it
    whether they were made already. (A result folded by another replica, or before the owner's
    own write of an earlier missed count, would otherwise make that count look done.)"""
    counters = _counters(new)
    counters["dispatched"] += 1
    slot, trigger = run.get("scheduledAt"), run.get("trigger")
    last = new.get("lastHandledSlot")
    if (
        trigger in ("Schedule", "CatchUp")
        and slot is not None
        and last is not None
        and slot <= last
        and counters["missed"] > 0
    ):
        counters["missed"] -= 1
    _scheduled(new, trigger, slot, handled=False)


@dataclass(frozen=True)
class FoldOutcome:
    status: Status
    accepted: bool
    reason: str = ""


def fold_result(
    status: Status,
    result: RunResult,
    *,
    limits: tuple[int, int],
    generation: int | None,
    now: datetime,
) -> FoldOutcome:
    """Apply one worker result. Returns the new status and whether the result was accepted."""
    new = dict(status)
    runs: list[dict[str, Any]] = list(status.get("runs") or [])
    index = next((i for i, r in enumerate(runs) if r.get("runId") == result.run_id), None)
    if index is None:
        # A run this status never saw dispatched: its dispatch record was lost (the operator
        # died between the publish and the status write), or it was submitted by a client.
        run: dict[str, Any] = {
            "runId": result.run_id,
            "scheduledAt": _ts(result.scheduled_at),
            "attempts": 0,
            "state": "Pending",
        }
        if result.trigger is not None:
            run["trigger"] = result.trigger
        runs.append(run)
    else:
        run = runs[index] = dict(runs[index])  # copied: the input status stays as it was
    if run.get("state") in FINAL_STATES:
        return FoldOutcome(status, False, f"run {result.run_id} already {run['state']}")
    if result.attempt < run.get("attempts", 0):
        return FoldOutcome(
            status, False, f"attempt {result.attempt} is older than {run['attempts']}"
        )
    best = run.get("fencingToken")
    if result.fencing_token is not None and best is not None and result.fencing_token < best:
        return FoldOutcome(
            status,
            False,
            f"stale fencing token {result.fencing_token} < {best} (a newer holder ran it)",
        )
    if index is None:
        _recovered(new, run)
    if result.fencing_token is not None:
        run["fencingToken"] = max(result.fencing_token, best or 0)
    run["attempts"] = max(run.get("attempts", 0), result.attempt)
    if result.started_at is not None and not run.get("startedAt"):
        run["startedAt"] = _ts(result.started_at)
    active: list[dict[str, Any]] = list(status.get("active") or [])
    new["active"] = active
    state = result.state
    if state in (RunState.RUNNING, RunState.RETRYING):
        run["state"] = "Running" if state is RunState.RUNNING else "Pending"
        if result.error is not None:
            run["error"] = f"{result.error.type}: {result.error.message}"[:4000]
        at = next((i for i, a in enumerate(active) if a.get("runId") == result.run_id), None)
        if at is None:
            entry = {"runId": result.run_id, "scheduledAt": run.get("scheduledAt")}
            active.append(entry)
        else:
            entry = active[at] = dict(active[at])
        entry["attempt"] = result.attempt
        if state is RunState.RUNNING:
            if result.started_at is not None:
                entry["startedAt"] = _ts(result.started_at)
            if result.worker:
                entry["worker"] = result.worker
    else:
        final = state.value
        run["state"] = final
        run["finishedAt"] = _ts(result.finished_at or now)
        run["output"] = [{"uri": o.uri, "size": o.size, "etag": o.etag} for o in result.outputs]
        if result.error is not None:
            run["error"] = f"{result.error.type}: {result.error.message}"[:4000]
        elif final == "Succeeded":
            run.pop("error", None)
        new["active"] = [a for a in active if a.get("runId") != result.run_id]
        counters = _counters(new)
        finished = run["finishedAt"]
        new["lastCompletionTime"] = _later(new.get("lastCompletionTime"), finished)
        new["lastResult"] = final
        if final == "Succeeded":
            counters["succeeded"] += 1
            new["lastSuccessfulTime"] = _later(new.get("lastSuccessfulTime"), finished)
        elif final in _FAILED_LIKE:
            counters["failed"] += 1
            if final == "DeadLettered":
                counters["deadLettered"] += 1
        new["conditions"] = set_condition(
            new.get("conditions", []),
            type_="LastRunSucceeded",
            status=final == "Succeeded",
            reason=final,
            message=(
                f"run {result.run_id} succeeded"
                if final == "Succeeded"
                else f"run {result.run_id} {final.lower()}: {run.get('error', 'no error reported')}"
            )[:1000],
            now=now,
            generation=generation,
        )
    new["runs"] = trim_runs(_sort_runs(runs), succeeded=limits[0], failed=limits[1])
    return FoldOutcome(new, True)
