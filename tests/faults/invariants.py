"""The invariants of a fault run, checked over a :class:`~tests.faults.sources.Snapshot` (pure).

Each check compares at least two of the three sources (the Jobs' status, the results stream,
the objects in S3) or a source with the schedule, and returns a
:class:`~tests.faults.verdict.Verdict` with the numbers on both sides. Nothing is tolerated:
every Job's window is ``[startAt, endAt]`` with both fixed before the run, so no slot is in
flight at either edge, and the checks run only after the system settled.

A run "ran" when the results stream holds at least one result of its run id (a worker took it);
its final state is the first final state the stream holds for it, as the operator's fold keeps
the first one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from kadence.protocol import RunResult, RunState
from kadence_operator.scheduling import run_id_for_slot
from tests.faults import sources, workload
from tests.faults.verdict import ALL, Verdict

FINAL = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.DEAD_LETTERED,
    }
)
#: Final states the operator counts in ``counters.failed`` (results/fold.py).
FAILED_LIKE = frozenset(FINAL - {RunState.SUCCEEDED})
STATUS_FINAL = frozenset(s.value for s in FINAL) | {"Skipped"}


@dataclass(frozen=True)
class RunsInStream:
    """What the results stream says about one Job's runs."""

    #: run id -> its results, in stream order.
    by_run: dict[str, list[RunResult]]

    @classmethod
    def of(cls, results: Iterable[RunResult]) -> RunsInStream:
        by_run: dict[str, list[RunResult]] = {}
        for result in results:
            by_run.setdefault(result.run_id, []).append(result)
        return cls(by_run)

    def first_final(self, run_id: str) -> RunState | None:
        return next((r.state for r in self.by_run[run_id] if r.state in FINAL), None)

    def finals(self, run_id: str) -> set[RunState]:
        return {r.state for r in self.by_run[run_id] if r.state in FINAL}

    def succeeded_attempts(self, run_id: str) -> set[int]:
        return {r.attempt for r in self.by_run[run_id] if r.state is RunState.SUCCEEDED}


def _ids(values: Iterable[str], limit: int = 3) -> str:
    items = sorted(values)
    more = f" +{len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_job(
    plan: workload.JobPlan,
    job: sources.JobView,
    results: list[RunResult],
    objects: dict[str, sources.ObjectView],
    *,
    start_at: datetime,
    end_at: datetime,
) -> list[Verdict]:
    name = plan.name
    stream = RunsInStream.of(results)
    slot_ids = {
        run_id_for_slot(job.uid, slot)
        for slot in workload.slots(start_at=start_at, end_at=end_at, period=plan.period)
    }
    n_slots = len(slot_ids)
    c = {k: job.counters.get(k, 0) for k in ("dispatched", "skipped", "missed")}
    c |= {k: job.counters.get(k, 0) for k in ("succeeded", "failed")}
    ran = slot_ids & stream.by_run.keys()
    stray = stream.by_run.keys() - slot_ids
    verdicts = []

    # 1. Every slot of the window is run or counted, and nothing else runs.
    total = c["dispatched"] + c["skipped"] + c["missed"]
    verdicts.append(
        Verdict(
            "slots: dispatched+skipped+missed = slots",
            name,
            ok=total == n_slots,
            expected=f"{n_slots} slots",
            observed=f"{c['dispatched']}+{c['skipped']}+{c['missed']} = {total}",
            note="" if total == n_slots else f"{total - n_slots:+d} vs the schedule",
        )
    )
    counted = len(ran) + c["skipped"] + c["missed"]
    verdicts.append(
        Verdict(
            "slots: ran (stream)+skipped+missed = slots",
            name,
            ok=counted == n_slots,
            expected=f"{n_slots} slots",
            observed=f"{len(ran)}+{c['skipped']}+{c['missed']} = {counted}",
            note=(
                ""
                if counted == n_slots
                else (
                    f"{counted - n_slots:+d}: a slot that ran was also counted skipped/missed"
                    if counted > n_slots
                    else f"{counted - n_slots:+d}: a slot neither ran nor was counted"
                )
            ),
        )
    )
    verdicts.append(
        Verdict(
            "runs are slots of the window",
            name,
            ok=not stray,
            expected="0 other run ids",
            observed=f"{len(stray)} other run ids",
            note=_ids(stray) if stray else "",
        )
    )

    # 2. Exactly once. A policy that holds the Job's Lease (Forbid, BufferOne, Replace) runs a
    # slot to success once: the fencing token stops a stale holder. Allow holds no Lease and
    # is at least once: a worker frozen past ackWait finishes the attempt the run's redelivery
    # also finished (in its own output folder); the status still records one success.
    twice = {rid for rid in stream.by_run if len(stream.succeeded_attempts(rid)) > 1}
    lease = plan.policy != "Allow"
    verdicts.append(
        Verdict(
            "no run Succeeded twice (stream)" if lease else "runs Succeeded twice (Allow: info)",
            name,
            ok=not twice or not lease,
            expected="0 runs" if lease else "at least once",
            observed=f"{len(twice)} runs",
            note=(
                "; ".join(
                    f"{rid} attempts {sorted(stream.succeeded_attempts(rid))}"
                    for rid in sorted(twice)[:3]
                )
                if twice
                else ""
            ),
        )
    )
    mixed = {rid for rid in stream.by_run if len(stream.finals(rid)) > 1}
    verdicts.append(
        Verdict(
            "one final state per run (stream)",
            name,
            ok=not mixed,
            expected="0 runs",
            observed=f"{len(mixed)} runs",
            note=(
                "; ".join(
                    f"{rid}: {'/'.join(sorted(s.value for s in stream.finals(rid)))}"
                    for rid in sorted(mixed)[:3]
                )
                if mixed
                else ""
            ),
        )
    )
    untriggered = [r.get("runId", "?") for r in job.runs if not r.get("trigger")]
    verdicts.append(
        Verdict(
            "run records have a trigger (status)",
            name,
            ok=not untriggered,
            expected=f"0 of {len(job.runs)} records",
            observed=f"{len(untriggered)} without",
            note=_ids(untriggered) if untriggered else "",
        )
    )
    # The history the status keeps: every finished run up to historyLimits, of each kind.
    kept_ok = sum(1 for r in job.runs if r.get("state") == "Succeeded")
    kept_other = sum(1 for r in job.runs if r.get("state") in STATUS_FINAL - {"Succeeded"})
    ended = [stream.first_final(rid) for rid in stream.by_run]
    want_ok = min(workload.HISTORY_LIMIT, sum(1 for s in ended if s is RunState.SUCCEEDED))
    want_other = min(workload.HISTORY_LIMIT, sum(1 for s in ended if s in FAILED_LIKE))
    verdicts.append(
        Verdict(
            "history kept per historyLimits (status)",
            name,
            ok=kept_ok >= want_ok and kept_other >= want_other,
            expected=f"{want_ok} Succeeded + {want_other} other records",
            observed=f"{kept_ok} + {kept_other}",
        )
    )
    repeated = [rid for rid, k in Counter(r.get("runId") for r in job.runs).items() if k > 1]
    verdicts.append(
        Verdict(
            "run recorded once (status)",
            name,
            ok=not repeated,
            expected="0 run ids twice",
            observed=f"{len(repeated)} twice",
        )
    )

    # 3. Status counters vs the results stream.
    firsts = {rid: stream.first_final(rid) for rid in stream.by_run}
    succeeded = sum(1 for s in firsts.values() if s is RunState.SUCCEEDED)
    failed = sum(1 for s in firsts.values() if s in FAILED_LIKE)
    for counter, in_stream, what in (
        ("dispatched", len(stream.by_run), "run ids with a result"),
        ("succeeded", succeeded, "runs ending Succeeded"),
        ("failed", failed, "runs ending Failed/TimedOut/Cancelled/DeadLettered"),
    ):
        verdicts.append(
            Verdict(
                f"counters.{counter} = stream",
                name,
                ok=c[counter] == in_stream,
                expected=f"{in_stream} {what}",
                observed=f"{c[counter]}",
                note="" if c[counter] == in_stream else f"{c[counter] - in_stream:+d}",
            )
        )

    # 4. Outputs: reported objects exist with the reported size, and were not overwritten.
    reported: dict[str, tuple[int, str, str]] = {}  # uri -> (size, etag, source)
    for run in job.runs:
        for output in run.get("output") or []:
            reported[output["uri"]] = (output["size"], output["etag"], "status")
    for rid in stream.by_run:
        first_success = next((r for r in stream.by_run[rid] if r.state is RunState.SUCCEEDED), None)
        for output in first_success.outputs if first_success else ():
            reported.setdefault(output.uri, (output.size, output.etag, "stream"))
    missing = [u for u in reported if objects[u].size is None]
    resized = [u for u, (size, _, _) in reported.items() if objects[u].size not in (None, size)]
    verdicts.append(
        Verdict(
            "outputs exist with reported size (S3)",
            name,
            ok=not missing and not resized,
            expected=f"{len(reported)} objects",
            observed=f"{len(missing)} missing, {len(resized)} other size",
            note=_ids(missing + resized) if missing or resized else "",
        )
    )
    overwritten = [
        u
        for u, (_, etag, _) in reported.items()
        if objects[u].etag is not None and objects[u].etag != etag
    ]
    verdicts.append(
        Verdict(
            "outputs not overwritten (etag, S3)",
            name,
            ok=not overwritten,
            expected=f"{len(reported) - len(missing)} etags as reported",
            observed=f"{len(overwritten)} replaced",
            note=(
                "; ".join(
                    f"{u.rsplit('/', 2)[-2]} reported via {reported[u][2]}, now {objects[u].writer}"
                    for u in overwritten[:3]
                )
                if overwritten
                else ""
            ),
        )
    )

    # 5. Nothing stuck.
    unfinished_stream = [rid for rid, s in firsts.items() if s is None]
    unfinished_status = [
        r.get("runId", "?") for r in job.runs if r.get("state") not in STATUS_FINAL
    ]
    stuck = bool(job.active or job.next_run or unfinished_stream or unfinished_status)
    verdicts.append(
        Verdict(
            "settled: no active or unfinished run",
            name,
            ok=not stuck,
            expected="0 active, 0 unfinished, no next run",
            observed=(
                f"{len(job.active)} active, {len(unfinished_status)} unfinished (status), "
                f"{len(unfinished_stream)} without final result (stream)"
                + (f", nextRunTime {job.next_run}" if job.next_run else "")
            ),
            note=_ids([*unfinished_stream, *unfinished_status]) if stuck else "",
        )
    )
    return verdicts


def check_run(snapshot: sources.Snapshot, *, start_at: datetime, end_at: datetime) -> list[Verdict]:
    """Every invariant of the run, the per-Job ones Job by Job, then the global ones."""
    verdicts = []
    for plan in workload.JOBS:
        job = snapshot.jobs.get(plan.name)
        if job is None:
            verdicts.append(Verdict("Job exists", plan.name, False, "present", "missing"))
            continue
        verdicts.extend(
            check_job(
                plan,
                job,
                snapshot.nats.results.get(plan.name, []),
                snapshot.objects,
                start_at=start_at,
                end_at=end_at,
            )
        )
    nats = snapshot.nats
    verdicts.append(
        Verdict(
            "results stream decodes",
            ALL,
            ok=not nats.undecodable,
            expected="0 bad entries",
            observed=f"{len(nats.undecodable)} bad of {nats.messages} messages",
            note="; ".join(nats.undecodable[:3]),
        )
    )
    work = [b for b in nats.backlogs if b.consumer != "kadence-operator"]
    left = sum(nats.stream_messages.values())
    pending = sum(b.pending + b.ack_pending for b in work)
    verdicts.append(
        Verdict(
            "queues drained (NATS)",
            ALL,
            ok=left == 0 and pending == 0,
            expected="0 messages, 0 pending",
            observed=f"{left} messages, {pending} pending/unacked",
            note="; ".join(
                f"{b.stream}/{b.consumer} {b.pending}+{b.ack_pending}"
                for b in work
                if b.pending or b.ack_pending
            ),
        )
    )
    results = [b for b in nats.backlogs if b.consumer == "kadence-operator"]
    unfolded = sum(b.pending + b.ack_pending for b in results)
    verdicts.append(
        Verdict(
            "results drained (operator consumer)",
            ALL,
            ok=unfolded == 0,
            expected="0 pending",
            observed=f"{unfolded} pending/unacked",
        )
    )
    finals = {
        r.run_id for results_of in nats.results.values() for r in results_of if r.state in FINAL
    }
    unreported = [d for d in nats.dead_letters if d.run_id not in finals]
    verdicts.append(
        Verdict(
            "dead letters have a final result",
            ALL,
            ok=not unreported,
            expected=f"{len(nats.dead_letters)} dead letters reported",
            observed=f"{len(unreported)} without a final result",
            note="; ".join(f"{d.job}/{d.run_id} {d.reason}" for d in unreported[:3]),
        )
    )
    return verdicts
