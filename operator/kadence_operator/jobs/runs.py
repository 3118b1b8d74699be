"""From a Job spec to the scheduling core's inputs and to run requests (pure).

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import TypeAdapter

from kadence import constants, partitioning
from kadence.protocol import (
    Backoff,
    ConcurrencyPolicy,
    JobRef,
    ObjectRef,
    OutputLocation,
    RetryPolicy,
    RunRequest,
    decode_run,
    encode,
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
    a Job every 5 minutes created at 10:02 runs at once (the 10:02 slot is on time when the
    operator sees the new Job), then at 10:07, 10:12, …
    """
    sched = spec.schedule
    if sched is None:
        return None
    return scheduling.Schedule(
        interval=parse_duration(sched.interval) if sched.interval else None,
        cron=sched.cron,
        time_zone=sched.time_zone,
        start_at=sched.start_at.astimezone(UTC) if sched.start_at else None,
        end_at=sched.end_at.astimezone(UTC) if sched.end_at else None,
        jitter=parse_duration(sched.jitter) if sched.jitter else scheduling.Schedule.jitter,
        spread=scheduling.Spread(sched.spread),
        anchor=created.astimezone(UTC),
    )


def output_prefix(*, namespace: str, job: str, run_id: str, prefix: str | None) -> str:
    base = f"{prefix.strip('/')}/" if prefix else ""
    return f"{base}{namespace}/{job}/{run_id}/"


#: Stand-ins for the run id, the slot and the trigger in a :class:`RequestTemplate`'s encoded form.
_RUN_ID_TOKEN = "kadence-run-id-placeholder-7f3a"
_TRIGGER_TOKEN = "kadence-trigger-7f3a"
_SLOT_TOKEN = datetime(1, 1, 1, tzinfo=UTC)
_DATETIME = TypeAdapter(datetime)
_SLOT_JSON = _DATETIME.dump_json(_SLOT_TOKEN)


@dataclass(frozen=True)
class RequestTemplate:
    """Everything of a Job's run requests but the run id, the slot and the trigger, built once
    per spec.

    Parsing durations, validating the nested models and serialising them cost more than the
    rest of a fire; with a thousand Jobs due in the same second that is on the critical path.
    The scheduler keeps one template per Job (rebuilt when the spec or the Queue changes) and
    only fills the run id, the slot and the trigger into its encoded form.
    """

    subject: str
    #: The encoded request with the stand-ins (some hundred bytes, kept for every Job).
    encoded: bytes | None
    #: The request model, kept only when the spec happens to contain a stand-in.
    request: RunRequest | None
    output_head: str

    def render(self, *, run_id: str, scheduled_at: datetime, trigger: str) -> RunRequest:
        request = self.request
        if request is None:
            return decode_run(
                self.encode(run_id=run_id, scheduled_at=scheduled_at, trigger=trigger)
            )
        assert request.output is not None
        output = request.output.model_copy(update={"prefix": f"{self.output_head}{run_id}/"})
        return request.model_copy(
            update={
                "run_id": run_id,
                "scheduled_at": scheduled_at,
                "trigger": trigger,
                "output": output,
            }
        )

    def encode(self, *, run_id: str, scheduled_at: datetime, trigger: str) -> bytes:
        """``encode(self.render(...))``, without building the model."""
        if self.encoded is None:
            return encode(self.render(run_id=run_id, scheduled_at=scheduled_at, trigger=trigger))
        return (
            self.encoded.replace(_RUN_ID_TOKEN.encode(), run_id.encode())
            .replace(_SLOT_JSON, _slot_json(scheduled_at))
            .replace(_TRIGGER_TOKEN.encode(), trigger.encode(), 1)
        )


def _slot_json(moment: datetime) -> bytes:
    return _DATETIME.dump_json(moment)


def request_template(
    *, spec: JobSpec, job: JobRef, queue: QueueInfo, default_bucket: str
) -> RequestTemplate:
    """The :class:`RequestTemplate` of a Job on its Queue."""
    subject, request = build(
        spec=spec,
        job=job,
        queue=queue,
        run_id=_RUN_ID_TOKEN,
        scheduled_at=_SLOT_TOKEN,
        trigger=_TRIGGER_TOKEN,
        default_bucket=default_bucket,
    )
    output = spec.output
    head = output_prefix(
        namespace=job.namespace,
        job=job.name,
        run_id="",
        prefix=output.prefix if output else None,
    )[:-1]  # "<prefix><ns>/<job>/": the run id and a "/" follow
    encoded = encode(request)
    # The stand-ins must appear exactly where they were put (run id, output prefix, slot,
    # trigger).
    if (
        encoded.count(_RUN_ID_TOKEN.encode()) == 2
        and encoded.count(_SLOT_JSON) == 1
        and encoded.count(_TRIGGER_TOKEN.encode()) == 1
    ):
        return RequestTemplate(subject=subject, encoded=encoded, request=None, output_head=head)
    return RequestTemplate(subject=subject, encoded=None, request=request, output_head=head)


def build(
    *,
    spec: JobSpec,
    job: JobRef,
    queue: QueueInfo,
    run_id: str,
    scheduled_at: datetime | None,
    default_bucket: str,
    trigger: str | None = None,
) -> tuple[str, RunRequest]:
    """The subject to publish to and the run request for one run of ``spec``."""
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
        trigger=trigger,
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
