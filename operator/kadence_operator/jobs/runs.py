"""From a Job spec to the scheduling core's inputs and to run requests (pure).

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kadence import constants, partitioning
from kadence.protocol import (
    Backoff,
    ConcurrencyPolicy,
    JobRef,
    ObjectRef,
    OutputLocation,
    RetryPolicy,
    RunRequest,
)
from kadence_operator import scheduling
from kadence_operator.api import JobSpec, parse_duration


@dataclass(frozen=True)
class QueueInfo:
    """What dispatch needs to know of a Queue (kept up to date from Queue events)."""

    namespace: str
    name: str
    partitions: int
    ack_wait_seconds: float
    ready: bool
    reason: str = ""


def schedule_of(spec: JobSpec, *, created: datetime) -> scheduling.Schedule | None:
    """The scheduling core's view of ``spec.schedule`` (None for a one-shot Job).

    Interval slots are anchored at ``startAt`` or, without one, at the Job's creation time, so
    a Job every 5 minutes created at 10:02 fires at 10:07, 10:12, …
    """
    sched = spec.schedule
    if sched is None:
        return None
    return scheduling.Schedule(
        interval=parse_duration(sched.interval) if sched.interval else None,
        cron=sched.cron,
        time_zone=sched.time_zone,
        start_at=sched.start_at,
        end_at=sched.end_at,
        jitter=parse_duration(sched.jitter) if sched.jitter else scheduling.Schedule.jitter,
        spread=scheduling.Spread(sched.spread),
        anchor=created,
    )


def output_prefix(*, namespace: str, job: str, run_id: str, prefix: str | None) -> str:
    base = f"{prefix.strip('/')}/" if prefix else ""
    return f"{base}{namespace}/{job}/{run_id}/"


def build_request(
    *,
    spec: JobSpec,
    job: JobRef,
    queue: QueueInfo,
    run_id: str,
    scheduled_at: datetime,
    default_bucket: str,
) -> tuple[str, RunRequest]:
    """The subject to publish to and the run request for one run."""
    key = spec.partition_key or f"{job.namespace}/{job.name}"
    partition = partitioning.partition_for(key, queue.partitions)
    retry = spec.retry_policy
    output = spec.output
    request = RunRequest(
        run_id=run_id,
        task=spec.task,
        payload=spec.payload,
        job=job,
        input=ObjectRef(bucket=spec.input.bucket, key=spec.input.key) if spec.input else None,
        output=OutputLocation(
            bucket=output.bucket if output and output.bucket else default_bucket,
            prefix=output_prefix(
                namespace=job.namespace,
                job=job.name,
                run_id=run_id,
                prefix=output.prefix if output else None,
            ),
        ),
        scheduled_at=scheduled_at,
        timeout_seconds=parse_duration(spec.timeout).total_seconds() if spec.timeout else None,
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            backoff=Backoff(
                initial_seconds=parse_duration(retry.backoff.initial).total_seconds(),
                factor=retry.backoff.factor,
                max_seconds=parse_duration(retry.backoff.max).total_seconds(),
            ),
            non_retryable_errors=tuple(retry.non_retryable_errors),
        ),
        concurrency_policy=ConcurrencyPolicy(spec.concurrency_policy),
        ack_wait_seconds=queue.ack_wait_seconds,
        dlq_subject=constants.dlq_subject(queue.namespace, queue.name),
        partition_key=key,
    )
    return constants.subject(queue.namespace, queue.name, partition), request
