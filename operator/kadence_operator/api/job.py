"""The ``Job`` custom resource (``jobs.kadence.io``, short name ``kjob``).

A Job says *what* to run (a task name and its payload), *where* (a Queue in the same namespace)
and *when* (once, every interval, or on a cron schedule), plus how to handle overlap, missed
slots, retries, timeouts and history. The operator turns each due slot into a *run*: it
publishes a message to the Queue, a worker executes the task, and the outcome is recorded in
``status.runs``.

This module holds the pydantic models for the spec and the status; the CRD schema is generated
from them. Field descriptions are what ``kubectl explain jobs.spec...`` prints; the longer story
is in ``docs/api.md``.

Why it is longer than ~500 lines: it is the Job's schema written once, and most of it is the
field descriptions ``kubectl explain`` prints; splitting the models would split one schema.
"""

from __future__ import annotations

import json
from typing import Annotated, ClassVar, Literal

from pydantic import Field, JsonValue, StrictBool, StrictFloat, StrictInt, field_validator

from kadence.protocol import MAX_PAYLOAD_BYTES
from kadence_operator.api.common import (
    DEFAULTED_OBJECT,
    ApiModel,
    CelRule,
    Condition,
    CrdNames,
    DateTime,
    DnsLabel,
    Duration,
    ObjectMeta,
    PrinterColumn,
    Text,
    conditions_field,
)
from kadence_operator.api.durations import parse_duration
from kadence_operator.scheduling import schedule

__all__ = [
    "CRON_ALIASES",
    "CRON_PATTERN",
    "MAX_BACKFILL_SLOTS",
    "MAX_CATCH_UP_SLOTS",
    "MAX_HISTORY",
    "MAX_PAYLOAD_BYTES",
    "TASK_PATTERN",
    "TIME_ZONE_PATTERN",
    "TRIGGER_ANNOTATION",
    "ActiveRun",
    "Backfill",
    "BackfillStatus",
    "CatchUp",
    "ConcurrencyPolicy",
    "HistoryLimits",
    "InputObject",
    "Job",
    "JobCounters",
    "JobSpec",
    "JobStatus",
    "OutputLocation",
    "OutputObject",
    "RetryBackoff",
    "RetryPolicy",
    "RunRecord",
    "RunState",
    "RunTrigger",
    "Schedule",
    "payload_size",
]

#: Annotation that triggers a run now: set it to a new value (e.g. the current time).
TRIGGER_ANNOTATION = "kadence.io/trigger"
#: Largest accepted ``spec.payload``, in bytes of compact UTF-8 JSON.
#: Most missed slots that ``catchUp.policy: All`` runs after an outage; older ones are missed.
MAX_CATCH_UP_SLOTS = 100
#: Most slots one ``spec.backfill`` range dispatches; the range is cut off after that many.
MAX_BACKFILL_SLOTS = 1000
#: The most finished runs of each kind status.runs keeps (historyLimits' maximum).
MAX_HISTORY = 100

#: The ``@`` shorthands accepted for ``schedule.cron`` (each stands for a 5-field expression).
CRON_ALIASES = schedule.CRON_ALIASES
#: 5 fields (minute hour day-of-month month day-of-week), 6 (seconds first), or a shorthand.
CRON_PATTERN = r"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4,5})\s*$"
#: Shape of an IANA time zone name; whether it exists is checked by the operator.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"
#: Task (handler) names: letters, digits, and ``. _ : -``; e.g. ``reports.build``.
TASK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-]*$"

ConcurrencyPolicy = Literal["Allow", "Forbid", "BufferOne", "Replace"]
RunState = Literal[
    "Pending", "Running", "Succeeded", "Failed", "TimedOut", "Cancelled", "Skipped", "DeadLettered"
]
RunTrigger = Literal["Schedule", "Manual", "Backfill", "CatchUp"]

_BUCKET = Annotated[
    str,
    Text(
        max_length=63,
        min_length=3,
        pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$",
        hint="an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-'",
    ),
]


def payload_size(payload: JsonValue) -> int:
    """Size of ``payload`` as compact UTF-8 JSON, the measure :data:`MAX_PAYLOAD_BYTES` limits."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class InputObject(ApiModel):
    """An object in S3-compatible storage that the task reads (passed to the task as its input)."""

    bucket: _BUCKET = Field(description="Bucket of the input object.")
    key: Annotated[str, Text(max_length=1024, min_length=1)] = Field(
        description="Key of the input object, e.g. data/2025-01-31.csv."
    )


class OutputLocation(ApiModel):
    """Where in S3-compatible storage the task writes its results.

    Each attempt of a run writes under ``<prefix><namespace>/<job>/<runId>/attempt-<n>/``
    (``attempt-<n>-fence-<token>/`` when it holds the Job's Lease), so no attempt overwrites
    another's objects; those of the attempt whose result was kept are listed in
    ``status.runs[].output``.
    """

    bucket: _BUCKET = Field(description="Bucket the results go to.")
    prefix: Annotated[str, Text(max_length=1024)] = Field(
        "", description='Key prefix for the results, e.g. "reports/daily/" (default empty).'
    )


class Schedule(ApiModel):
    """When the Job runs. Exactly one of interval or cron; leave schedule out to run once.

    Slots are computed from the schedule alone; jitter and spread only delay the dispatch of a
    slot, never move it to another slot.
    """

    __cel_rules__ = (
        CelRule(
            rule="has(self.interval) != has(self.cron)",
            message="exactly one of interval or cron must be set",
            check=lambda s: (s.interval is None) != (s.cron is None),
        ),
        CelRule(
            rule="!has(self.interval) || duration(self.interval) >= duration('1s')",
            message="interval must be at least 1s",
            field_path=".interval",
            check=lambda s: s.interval is None or parse_duration(s.interval).total_seconds() >= 1,
        ),
        CelRule(
            rule="!has(self.startAt) || !has(self.endAt) || self.endAt > self.startAt",
            message="endAt must be later than startAt",
            field_path=".endAt",
            check=lambda s: s.start_at is None or s.end_at is None or s.end_at > s.start_at,
        ),
        CelRule(
            rule=(
                "!has(self.jitter) || !has(self.interval) || "
                "duration(self.jitter) < duration(self.interval)"
            ),
            message="jitter must be shorter than interval",
            field_path=".jitter",
            check=lambda s: (
                s.jitter is None
                or s.interval is None
                or parse_duration(s.jitter) < parse_duration(s.interval)
            ),
        ),
    )

    interval: Duration | None = Field(
        None,
        description=(
            'Run every interval (Go duration, at least "1s"; e.g. "5s", "15m", "1h30m"). Slots '
            "are startAt + k * interval, or anchored at the Job's creation time when startAt is "
            "unset. Intervals are absolute durations; timeZone and DST do not affect them."
        ),
    )
    cron: (
        Annotated[
            str,
            Text(
                max_length=256,
                pattern=CRON_PATTERN,
                hint="5 fields, 6 with seconds first, or a shorthand such as @daily",
            ),
        ]
        | None
    ) = Field(
        None,
        description=(
            'Cron expression: 5 fields "minute hour day-of-month month day-of-week" (e.g. '
            '"0 3 * * 1-5"), 6 fields with seconds first ("*/10 * * * * *"), or one of '
            "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly. Ranges, lists, "
            "steps, names (MON, JAN), L and # are supported; H and R are not (use spread: hash). "
            "Matched against wall-clock time in timeZone."
        ),
    )
    time_zone: Annotated[
        str, Text(max_length=64, pattern=TIME_ZONE_PATTERN, hint="an IANA time zone name")
    ] = Field(
        "UTC",
        description=(
            'IANA time zone the cron expression is evaluated in, e.g. "Europe/Berlin" (default '
            "UTC). Across DST changes a local time that does not exist fires at the end of the "
            "gap, and a local time that occurs twice fires once, at its first occurrence. No "
            "effect on interval schedules."
        ),
    )
    start_at: DateTime | None = Field(
        None,
        description=(
            "No slot before this time (inclusive; RFC 3339, e.g. 2025-02-01T00:00:00Z). Also the "
            "anchor of interval slots."
        ),
    )
    end_at: DateTime | None = Field(
        None,
        description="No slot after this time (inclusive; RFC 3339); must be later than startAt.",
    )
    jitter: Duration | None = Field(
        None,
        description=(
            "Delay the dispatch of each slot by a pseudo-random amount in [0, jitter) (Go "
            'duration, e.g. "30s"; shorter than interval), to avoid a thundering herd. The delay '
            "is derived from the Job and the slot, so every operator replica agrees on it."
        ),
    )
    spread: Literal["none", "hash"] = Field(
        "none",
        description=(
            "`hash` delays every slot of this Job by the same offset, derived from the Job's "
            "UID and bounded by the schedule's period, so that many Jobs with the same schedule "
            "do not all fire at the same instant (like H in Jenkins cron). `none` (default): "
            "dispatch at the slot."
        ),
    )


class CatchUp(ApiModel):
    """What happens to slots missed while the operator was not running.

    Missed slots are detected when the operator starts (or the Job is first seen again).
    Slots that fall while the Job is suspended are skipped, not caught up.
    """

    policy: Literal["None", "One", "All"] = Field(
        "One",
        description=(
            "`None`: drop missed slots (counted in status.counters.missed). `One` (default): "
            "run once for the most recent missed slot. `All`: run every missed slot, oldest "
            f"first, at most {MAX_CATCH_UP_SLOTS} (older slots count as missed)."
        ),
    )
    window: Duration | None = Field(
        None,
        description=(
            "Only slots missed within this long before now are caught up (Go duration, e.g. "
            '"1h"); older ones count as missed. Unset: no limit besides the slot cap.'
        ),
    )
    grace: Duration = Field(
        "60s",
        description=(
            "How late the newest slot may be and still run as on time, whatever the policy "
            '(Go duration, default "60s"; "0s": only a slot not yet late). A slot later than '
            "that is late and the policy decides it. With an interval shorter than the grace "
            "the newest slot is always within it, so after an outage `One` runs what `None` "
            "runs; a shorter grace makes `One` run the newest late slot instead."
        ),
    )


class RetryBackoff(ApiModel):
    """Exponential backoff between attempts.

    The n-th retry waits min(max, initial * factor^(n-1)).
    """

    __cel_rules__ = (
        CelRule(
            rule=(
                "!has(self.initial) || !has(self.max) || "
                "duration(self.initial) <= duration(self.max)"
            ),
            message="initial must not be longer than max",
            field_path=".initial",
            check=lambda s: parse_duration(s.initial) <= parse_duration(s.max),
        ),
    )

    initial: Duration = Field("1s", description='Delay before the first retry (default "1s").')
    factor: StrictFloat = Field(
        2.0,
        ge=1,
        le=100,
        description="Multiplier applied to the delay after each retry (default 2).",
    )
    max: Duration = Field("5m", description='Longest delay between attempts (default "5m").')


class RetryPolicy(ApiModel):
    """How failed attempts of a run are retried.

    A run is retried when its task raises (or times out) and attempts remain, unless the error
    type is listed in nonRetryableErrors. When the attempts are used up the run is Failed
    (or DeadLettered, if the queue keeps dead letters).
    """

    max_attempts: StrictInt = Field(
        3,
        ge=1,
        le=100,
        description="Attempts per run, the first one included (default 3; 1 = no retries).",
    )
    backoff: RetryBackoff = Field(
        default_factory=RetryBackoff,
        json_schema_extra=DEFAULTED_OBJECT,
        description="Delay between attempts.",
    )
    non_retryable_errors: list[Annotated[str, Text(max_length=256, min_length=1)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Exception type names that fail the run at once, without retries; a name matches "
            "the exception class or any of its bases, by simple or qualified name (e.g. "
            '"ValueError", "myapp.errors.BadInput").'
        ),
    )


class HistoryLimits(ApiModel):
    """How many finished runs status.runs keeps (newest first)."""

    succeeded: StrictInt = Field(
        3, ge=0, le=MAX_HISTORY, description="Succeeded runs to keep (0-100, default 3)."
    )
    failed: StrictInt = Field(
        3,
        ge=0,
        le=MAX_HISTORY,
        description=(
            "Unsuccessful runs to keep: Failed, TimedOut, DeadLettered, Cancelled and Skipped "
            "(0-100, default 3)."
        ),
    )

    def pair(self) -> tuple[int, int]:
        """``(succeeded, failed)``, as the status fold takes them."""
        return (self.succeeded, self.failed)


class Backfill(ApiModel):
    """Run the schedule's slots in a past time range once, e.g. to fill a gap after an outage.

    Every slot in [from, to) is dispatched (at most 1000), obeying concurrencyPolicy.
    Set a new range to backfill again; status.backfill tracks progress.
    """

    __cel_rules__ = (
        CelRule(
            rule="self.to > self.from",
            message="to must be later than from",
            field_path=".to",
            check=lambda s: s.to > s.from_,
        ),
    )

    from_: DateTime = Field(alias="from", description="Start of the range, inclusive (RFC 3339).")
    to: DateTime = Field(description="End of the range, exclusive (RFC 3339).")


class JobSpec(ApiModel):
    """Desired state of a Job."""

    __cel_rules__ = (
        CelRule(
            rule="!has(self.backfill) || has(self.schedule)",
            message="backfill needs a schedule",
            field_path=".backfill",
            reason="FieldValueForbidden",
            check=lambda s: s.backfill is None or s.schedule is not None,
        ),
    )

    queue: DnsLabel = Field(
        description="Name of the Queue (kind Queue, same namespace) the runs are dispatched to."
    )
    task: Annotated[
        str,
        Text(
            max_length=253,
            min_length=1,
            pattern=TASK_PATTERN,
            hint="letters, digits, '.', '_', ':' and '-', not starting with a digit",
        ),
    ] = Field(
        description=(
            "Name of the task (handler) the workers run, as registered in the kadence App, "
            'e.g. "reports.build".'
        ),
    )
    payload: JsonValue | None = Field(
        None,
        description=(
            "Arguments for the task: any JSON value, passed to the handler as is. At most "
            f"{MAX_PAYLOAD_BYTES // 1024} KiB as compact JSON."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    partition_key: Annotated[str, Text(max_length=256, min_length=1)] | None = Field(
        None,
        description=(
            "Runs with the same key go to the same queue partition and run in order. "
            "Unset: the Job's namespace/name."
        ),
    )
    input: InputObject | None = Field(
        None, description="An object in S3-compatible storage the task reads."
    )
    output: OutputLocation | None = Field(
        None, description="Where in S3-compatible storage the task writes its results."
    )
    schedule: Schedule | None = Field(
        None,
        description=(
            "When to run: every interval or on a cron schedule. Unset: run once, as soon as "
            "the Job is created."
        ),
    )
    suspend: StrictBool = Field(
        False,
        description=(
            "Stop scheduling new runs (default false). Active runs continue; slots that fall "
            "while suspended are skipped. A manual trigger still runs."
        ),
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        "Allow",
        description=(
            "What to do when a slot comes while a run is still active: `Allow` (default) runs "
            "them side by side; `Forbid` skips the new slot (a Skipped run); `BufferOne` keeps "
            "at most one waiting slot and runs it when the active run ends; `Replace` cancels "
            "the active run and starts the new one."
        ),
    )
    catch_up: CatchUp = Field(
        default_factory=CatchUp,
        json_schema_extra=DEFAULTED_OBJECT,
        description="What to do with slots missed during an outage.",
    )
    retry_policy: RetryPolicy = Field(
        default_factory=RetryPolicy,
        json_schema_extra=DEFAULTED_OBJECT,
        description="Retries of failed attempts.",
    )
    timeout: Duration | None = Field(
        None,
        description=(
            'Time limit of one attempt (Go duration, e.g. "10m"). An attempt over the limit is '
            "TimedOut and retried if attempts remain. Unset: no limit."
        ),
    )
    history_limits: HistoryLimits = Field(
        default_factory=HistoryLimits,
        json_schema_extra=DEFAULTED_OBJECT,
        description="How many finished runs status.runs keeps.",
    )
    backfill: Backfill | None = Field(
        None, description="Run the schedule's slots in a past time range once."
    )

    @field_validator("payload")
    @classmethod
    def _payload_not_too_large(cls, payload: JsonValue | None) -> JsonValue | None:
        if payload is not None and (size := payload_size(payload)) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"payload is {size} bytes as JSON, more than the limit of {MAX_PAYLOAD_BYTES} "
                "(64 KiB); put large inputs in object storage and use spec.input"
            )
        return payload


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


class OutputObject(ApiModel):
    """An object a run wrote to storage."""

    uri: Annotated[str, Text(max_length=2048)] = Field(
        description=(
            "Location of the object, e.g. "
            "s3://bucket/reports/daily/<namespace>/<job>/<runId>/attempt-1/report.pdf."
        )
    )
    size: StrictInt | None = Field(None, ge=0, description="Size in bytes.")
    etag: str | None = Field(None, description="ETag reported by the storage.")


class ActiveRun(ApiModel):
    """A run that has been dispatched and has not finished."""

    run_id: str = Field(description="ID of the run, unique within the Job.")
    attempt: StrictInt = Field(1, ge=1, description="Current attempt, starting at 1.")
    scheduled_at: DateTime | None = Field(None, description="The slot the run is for.")
    started_at: DateTime | None = Field(
        None, description="When a worker started the current attempt."
    )
    worker: str | None = Field(None, description="Worker running the current attempt.")


class RunRecord(ApiModel):
    """A run of the Job: one slot, with all its attempts."""

    run_id: str = Field(description="ID of the run, unique within the Job.")
    trigger: RunTrigger | None = Field(
        None,
        description="What created the run: Schedule, Manual (annotation), Backfill or CatchUp.",
    )
    scheduled_at: DateTime | None = Field(None, description="The slot the run is for.")
    started_at: DateTime | None = Field(None, description="When the first attempt started.")
    finished_at: DateTime | None = Field(None, description="When the run reached a final state.")
    attempts: StrictInt = Field(0, ge=0, description="Attempts made so far.")
    state: RunState = Field(
        description=(
            "Pending (dispatched, not started), Running, or a final state: Succeeded, Failed, "
            "TimedOut, Cancelled, Skipped (concurrencyPolicy Forbid) or DeadLettered."
        )
    )
    output: list[OutputObject] = Field(
        default_factory=list, description="Objects the run wrote to storage."
    )
    error: str | None = Field(None, description="Error of the last failed attempt.")
    fencing_token: StrictInt | None = Field(
        None,
        ge=0,
        description=(
            "Largest fencing token (the Job Lease's leaseTransitions) a worker reported for this "
            "run; a result with a smaller token comes from a stale lock holder and is rejected."
        ),
    )


class JobCounters(ApiModel):
    """Totals since the Job was created."""

    dispatched: StrictInt = Field(0, ge=0, description="Runs dispatched to the queue.")
    succeeded: StrictInt = Field(0, ge=0, description="Runs that succeeded.")
    failed: StrictInt = Field(
        0, ge=0, description="Runs that failed for good (Failed or TimedOut on the last attempt)."
    )
    skipped: StrictInt = Field(0, ge=0, description="Slots skipped by concurrencyPolicy.")
    missed: StrictInt = Field(0, ge=0, description="Slots missed and not caught up.")
    dead_lettered: StrictInt = Field(0, ge=0, description="Runs whose message was dead-lettered.")


class BackfillStatus(ApiModel):
    """Progress of the last spec.backfill range."""

    from_: DateTime = Field(alias="from", description="Start of the range being backfilled.")
    to: DateTime = Field(description="End of the range being backfilled.")
    dispatched: StrictInt = Field(0, ge=0, description="Slots of the range dispatched so far.")
    completion_time: DateTime | None = Field(
        None, description="When every slot of the range had been dispatched."
    )


class JobStatus(ApiModel):
    """Observed state of a Job, written by the operator."""

    conditions: list[Condition] = conditions_field(
        "Current state: Ready (spec valid, queue found), Scheduled (a next run is planned), "
        "Suspended, LastRunSucceeded."
    )
    observed_generation: StrictInt | None = Field(
        None, description="The .metadata.generation this status reflects."
    )
    next_run_time: DateTime | None = Field(None, description="The next slot, if any.")
    last_schedule_time: DateTime | None = Field(
        None, description="The slot of the most recently dispatched run."
    )
    last_handled_slot: DateTime | None = Field(
        None,
        description=(
            "The newest slot the scheduler has dealt with: dispatched, skipped by the "
            "concurrencyPolicy or counted missed. Catch-up after a restart or a fail-over starts "
            "after it, so no slot is counted twice."
        ),
    )
    buffered_slot: DateTime | None = Field(
        None,
        description=(
            "concurrencyPolicy BufferOne: the slot held back until the active run ends. Kept "
            "here so that an operator restart or a fail-over runs it, and runs it once."
        ),
    )
    last_completion_time: DateTime | None = Field(
        None, description="When the most recent run finished."
    )
    last_successful_time: DateTime | None = Field(
        None, description="When the most recent successful run finished."
    )
    last_result: RunState | None = Field(
        None, description="Final state of the most recently finished run."
    )
    last_trigger: str | None = Field(
        None,
        description=f"The value of the {TRIGGER_ANNOTATION} annotation last acted on.",
    )
    active: list[ActiveRun] = Field(default_factory=list, description="Runs not finished yet.")
    runs: list[RunRecord] = Field(
        default_factory=list,
        description="Recent runs, newest first, trimmed to spec.historyLimits.",
    )
    counters: JobCounters = Field(
        default_factory=JobCounters, description="Totals since the Job was created."
    )
    backfill: BackfillStatus | None = Field(None, description="Progress of spec.backfill.")


# --------------------------------------------------------------------------------------------
# Resource
# --------------------------------------------------------------------------------------------


class Job(ApiModel):
    """A task to run on a Queue: once, every interval, or on a cron schedule.

    To run a Job now, outside its schedule, set the annotation kadence.io/trigger to a new value,
    e.g. `kubectl annotate kjob/NAME kadence.io/trigger="$(date +%s)" --overwrite`. Each new
    value dispatches one run (even while suspended), subject to concurrencyPolicy.
    """

    crd: ClassVar[CrdNames] = CrdNames(
        kind="Job",
        singular="job",
        plural="jobs",
        short_names=("kjob",),
        printer_columns=(
            PrinterColumn("Queue", "string", ".spec.queue", "Queue the runs go to."),
            PrinterColumn("Task", "string", ".spec.task", "Task the workers run.", priority=1),
            PrinterColumn(
                "Schedule",
                "string",
                ".spec.schedule['interval','cron']",
                "The interval or the cron expression; empty for a one-shot Job.",
            ),
            PrinterColumn("Suspend", "boolean", ".spec.suspend", "Whether scheduling is paused."),
            PrinterColumn(
                "Last Run", "date", ".status.lastScheduleTime", "Slot of the latest run."
            ),
            PrinterColumn("Next Run", "string", ".status.nextRunTime", "The next slot (RFC 3339)."),
            PrinterColumn(
                "Last Result", "string", ".status.lastResult", "Outcome of the latest run."
            ),
        ),
    )

    api_version: Literal["kadence.io/v1alpha1"] = Field("kadence.io/v1alpha1", alias="apiVersion")
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: JobSpec = Field(description="Desired state of the Job.")
    status: JobStatus = Field(
        default_factory=JobStatus, description="Observed state, written by the operator."
    )

    def trigger(self) -> str | None:
        """The current value of the manual-trigger annotation, if set."""
        return self.metadata.annotations.get(TRIGGER_ANNOTATION)
