"""One fault run from start to verdict: the code ``test_faults.py`` and ``soak.py`` share.

1. Plan the faults from the seed (pure) and start the stack.
2. Create the Queues' Jobs with ``startAt`` a few seconds ahead and ``endAt`` after the planned
   end of the faults plus a tail, so the schedule's slots are exactly known.
3. Inject the faults from ``startAt`` on, printing each one and the Jobs' counters between them.
4. After ``endAt``, wait (bounded) until the system settles: no active run, no next run, every
   run record final, every Queue consumer and the operator's results consumer drained.
5. Read the three sources and check the invariants.
6. Trigger one Job and wait (bounded) for that run to succeed: the system still serves.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kadence_operator.api import TRIGGER_ANNOTATION
from kadence_operator.scheduling import run_id_for_trigger
from tests.faults import faults, invariants, sources, verdict, workload
from tests.faults import stack as stacks
from tests.integration import harness

Say = stacks.Say


@dataclass(frozen=True)
class RunConfig:
    seed: int
    #: Seconds of faults (at least; every kind is injected once even if that takes longer);
    #: with no ``kinds``, the length of the window (a control run without faults).
    duration: float
    workdir: Path
    #: The kinds to inject; None: every kind of the run's NATS (:func:`faults.kinds_for`).
    kinds: tuple[faults.FaultKind, ...] | None = None
    #: Seconds from creating the Jobs to their first slot.
    lead: float = 8.0
    #: Seconds from the planned end of the last fault to the Jobs' ``endAt``.
    tail: float = 12.0
    settle_timeout: float = 90.0
    trigger_timeout: float = 60.0
    #: Where to copy the processes' logs; None: nowhere.
    logs_to: Path | None = None
    #: Copy the logs also when every invariant holds.
    always_keep_logs: bool = False
    #: NATS nodes: 1 (one nats-server) or 3 (a JetStream cluster, Queues with 3 replicas, and
    #: the ``nats-node-kill`` fault).
    nats_cluster: int = 1

    @property
    def fault_kinds(self) -> tuple[faults.FaultKind, ...]:
        return faults.kinds_for(self.nats_cluster) if self.kinds is None else self.kinds


@dataclass
class Report:
    config: RunConfig
    plan: faults.FaultPlan
    records: list[faults.FaultRecord] = field(default_factory=list)
    start_at: datetime | None = None
    end_at: datetime | None = None
    verdicts: list[verdict.Verdict] = field(default_factory=list)
    settled_after: float | None = None  # seconds after endAt; None: did not settle in time
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    logs: Path | None = None
    #: What the checks read (:func:`sources.to_json`), saved as ``snapshot.json`` with the logs.
    snapshot: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.verdicts) and not verdict.failures(self.verdicts)


def _whole_second(moment: datetime) -> datetime:
    return datetime.fromtimestamp(math.ceil(moment.timestamp()), UTC)


def _sleep_until(moment: datetime) -> None:
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, 1.0))


def _wait_printing(stack: stacks.Stack, moment: datetime, say: Say, every: float = 15.0) -> None:
    """Sleep until ``moment``, printing :func:`progress_line` every ``every`` seconds."""
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, every))
        if datetime.now(UTC) < moment:
            try:
                say(progress_line(stack))
            except Exception as error:  # a server still coming back
                say(f"(status unavailable: {type(error).__name__})")


def progress_line(stack: stacks.Stack) -> str:
    """``job dispatched/skipped/missed ok/failed`` for every Job (one API call)."""
    jobs = sources.read_jobs(stack.kube)
    parts = []
    for plan in workload.JOBS:
        job = jobs.get(plan.name)
        if job is None:
            continue
        c = job.counters
        parts.append(
            f"{plan.name} {c.get('dispatched', 0)}/{c.get('skipped', 0)}/{c.get('missed', 0)}"
            f" {c.get('succeeded', 0)}/{c.get('failed', 0)}"
        )
    return "d/s/m ok/failed: " + ", ".join(parts)


def not_settled(stack: stacks.Stack) -> str:
    """Why the system has not settled yet; empty once it has."""
    jobs = sources.read_jobs(stack.kube)
    for plan in workload.JOBS:
        job = jobs.get(plan.name)
        if job is None:
            return f"{plan.name} missing"
        if job.active:
            return f"{plan.name}: {len(job.active)} active"
        if job.next_run:
            return f"{plan.name}: next run {job.next_run}"
        open_runs = [r for r in job.runs if r.get("state") not in invariants.STATUS_FINAL]
        if open_runs:
            return f"{plan.name}: {len(open_runs)} runs not final"
    for backlog in sources.read_backlogs(stack.nats.url):
        if backlog.pending or backlog.ack_pending:
            return f"{backlog.stream}/{backlog.consumer}: {backlog.pending}+{backlog.ack_pending}"
    return ""


def wait_settled(stack: stacks.Stack, *, timeout: float, say: Say) -> float | None:
    """Poll until :func:`not_settled` is empty twice in a row (2 s apart); the seconds it took,
    or None after ``timeout``."""
    started = time.monotonic()
    calm = 0
    last_said = ""
    while time.monotonic() - started < timeout:
        try:
            why = not_settled(stack)
        except Exception as error:  # a server still coming back
            why = f"{type(error).__name__}: {error}"
        calm = calm + 1 if not why else 0
        if calm >= 2:
            return time.monotonic() - started
        if why and why != last_said:
            say(f"settling: {why}")
            last_said = why
        time.sleep(2.0)
    return None


def probe_trigger(stack: stacks.Stack, *, seed: int, timeout: float) -> verdict.Verdict:
    """Trigger :data:`workload.PROBE_JOB` once and wait for that run to succeed."""
    name = workload.PROBE_JOB
    value = f"probe-{seed}-{int(time.time())}"
    uid = sources.read_jobs(stack.kube)[name].uid
    run_id = run_id_for_trigger(uid, value)
    harness.kubectl(
        stack.kube,
        "annotate",
        "kjob",
        name,
        "-n",
        workload.NAMESPACE,
        f"{TRIGGER_ANNOTATION}={value}",
        "--overwrite",
    )
    started = time.monotonic()
    state = "not dispatched"
    while time.monotonic() - started < timeout:
        job = sources.read_jobs(stack.kube)[name]
        record = next((r for r in job.runs if r.get("runId") == run_id), None)
        state = str(record.get("state")) if record else "not dispatched"
        if state == "Succeeded":
            break
        time.sleep(1.0)
    took = time.monotonic() - started
    return verdict.Verdict(
        "still serves: a trigger runs to Succeeded",
        name,
        ok=state == "Succeeded",
        expected=f"Succeeded within {timeout:.0f}s",
        observed=f"{state} after {took:.1f}s",
        note=f"run {run_id}",
    )


def execute(config: RunConfig, say: Say) -> Report:
    """One whole run; every process it starts is stopped before it returns."""
    plan = faults.plan(
        config.seed,
        duration=config.duration,
        kinds=config.fault_kinds,
        nats_cluster=config.nats_cluster,
    )
    report = Report(config=config, plan=plan)
    say(f"seed {config.seed}: {len(plan.faults)} faults planned over {plan.length:.0f}s")
    for fault in plan.faults:
        say(f"  at {fault.at:6.1f}s  {fault.describe()}")
    began = time.monotonic()
    clock_jumps = faults.FaultKind.CLOCK_JUMP in plan.kinds()
    stack = stacks.Stack(
        workdir=config.workdir,
        say=say,
        clock_jumps=clock_jumps,
        nats_cluster=config.nats_cluster,
    )
    try:
        stack.start()
        report.timings["start"] = time.monotonic() - began
        _run(stack, config, report, say)
    except Exception:
        report.error = traceback.format_exc()
        say(f"run aborted:\n{report.error}")
    finally:
        try:
            if config.logs_to is not None and (config.always_keep_logs or not report.ok):
                _keep(stack, report, config.logs_to)
        finally:
            stopping = time.monotonic()
            stack.stop()
            report.timings["stop"] = time.monotonic() - stopping
    report.timings["total"] = time.monotonic() - began
    return report


def _keep(stack: stacks.Stack, report: Report, folder: Path) -> None:
    """Copy the processes' logs and the snapshot the checks read to ``folder``."""
    stack.save_logs(folder)
    if report.snapshot is not None:
        dump = json.dumps(report.snapshot, indent=1, sort_keys=True)
        (folder / "snapshot.json").write_text(dump)
    report.logs = folder


def _run(stack: stacks.Stack, config: RunConfig, report: Report, say: Say) -> None:
    start_at = _whole_second(datetime.now(UTC) + timedelta(seconds=config.lead))
    # Without faults (a control run) the window is the requested duration.
    phase = report.plan.length if report.plan.faults else config.duration
    end_at = _whole_second(start_at + timedelta(seconds=phase + config.tail))
    report.start_at, report.end_at = start_at, end_at
    harness.apply(
        stack.kube,
        *(workload.job_manifest(j, start_at=start_at, end_at=end_at) for j in workload.JOBS),
    )
    say(f"Jobs created: slots from {workload.rfc3339(start_at)} to {workload.rfc3339(end_at)}")
    _sleep_until(start_at)

    phase = time.monotonic()
    injector = faults.Injector(stack=stack, say=say, progress=lambda: progress_line(stack))
    report.records = injector.run(report.plan, until=end_at)
    report.timings["faults"] = time.monotonic() - phase
    say(f"faults done; waiting for endAt {workload.rfc3339(end_at)}")
    _wait_printing(stack, end_at + timedelta(seconds=1), say)

    settling = time.monotonic()
    report.settled_after = wait_settled(stack, timeout=config.settle_timeout, say=say)
    report.timings["settle"] = time.monotonic() - settling
    if report.settled_after is None:
        say(f"not settled within {config.settle_timeout:.0f}s: checking as it is")
    else:
        say(f"settled {report.settled_after:.1f}s after endAt")

    checking = time.monotonic()
    snap = sources.snapshot(kube=stack.kube, nats_url=stack.nats.url, s3=stack.minio())
    report.snapshot = sources.to_json(snap)
    report.verdicts = invariants.check_run(snap, start_at=start_at, end_at=end_at)
    report.timings["check"] = time.monotonic() - checking

    probing = time.monotonic()
    report.verdicts.append(probe_trigger(stack, seed=config.seed, timeout=config.trigger_timeout))
    report.timings["probe"] = time.monotonic() - probing


def render(report: Report) -> str:
    """The verdict of a run: its faults, then one line per invariant, then every check."""
    config = report.config
    lines = [
        f"fault run: seed {config.seed}, duration {config.duration:.0f}s, "
        f"{len(workload.JOBS)} Jobs, {len(workload.WORKERS)} workers, "
        f"{len(stacks.OPERATOR_IDS)} operators"
        + (f", a {config.nats_cluster}-node NATS cluster" if config.nats_cluster > 1 else ""),
    ]
    if report.start_at and report.end_at:
        lines.append(
            f"window: {workload.rfc3339(report.start_at)} .. {workload.rfc3339(report.end_at)}"
        )
    lines.append("faults:")
    for record in report.records:
        f = record.fault
        when = record.started.strftime("%H:%M:%S")
        if record.skipped:
            outcome = f"skipped: {record.skipped}"
        else:
            outcome = f"recovered after {record.took:.1f}s"
        lines.append(f"  {when} +{record.offset:6.1f}s  {f.describe()}: {outcome}")
    not_injected = set(config.fault_kinds) - {r.fault.kind for r in report.records if not r.skipped}
    if not_injected:
        lines.append(f"  kinds not injected: {', '.join(sorted(k.value for k in not_injected))}")
    settled = (
        f"{report.settled_after:.1f}s after endAt"
        if report.settled_after is not None
        else f"NOT within {config.settle_timeout:.0f}s"
    )
    lines.append(f"settled: {settled}")
    lines.append("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in report.timings.items()))
    if report.error:
        lines.append(f"ERROR: {report.error.strip().splitlines()[-1]}")
    if report.verdicts:
        lines.append("")
        lines.append(verdict.summary(report.verdicts))
        lines.append("")
        lines.append(verdict.table(report.verdicts))
    if report.logs is not None:
        lines.append(f"logs: {report.logs}")
    lines.append("VERDICT: " + ("PASS" if report.ok else "FAIL"))
    return "\n".join(lines)
