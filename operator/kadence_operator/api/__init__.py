"""The Kadence API (group ``kadence.io``, version ``v1alpha1``): Queue and Job.

The pydantic models here are the single source of the API: ``crds/`` is generated from them
(``make crds``, :mod:`kadence_operator.crdgen`), and the operator validates bodies with them.

- :class:`Queue` / :class:`QueueSpec` / :class:`QueueStatus` (``kq``) - a partitioned work queue.
- :class:`Job` / :class:`JobSpec` / :class:`JobStatus` (``kjob``) - a task to run on a queue,
  once or on a schedule. :data:`TRIGGER_ANNOTATION` runs it now.
- :func:`parse_job` / :func:`parse_queue` turn a body into a typed spec or raise
  :class:`InvalidResource`; :func:`check_job` / :func:`check_queue` list the problems instead.
- :func:`parse_duration` reads the Go-style durations used throughout.

Pure: no kopf, kubernetes, nats or minio imports (an import-linter contract).
"""

from kadence_operator.api.common import (
    API_VERSION,
    CATEGORY,
    GROUP,
    VERSION,
    ApiModel,
    CelRule,
    Condition,
    CrdNames,
    ObjectMeta,
    PrinterColumn,
)
from kadence_operator.api.durations import format_duration, parse_duration, parse_duration_ns
from kadence_operator.api.job import (
    MAX_BACKFILL_SLOTS,
    MAX_CATCH_UP_SLOTS,
    MAX_PAYLOAD_BYTES,
    TRIGGER_ANNOTATION,
    ActiveRun,
    Backfill,
    BackfillStatus,
    CatchUp,
    ConcurrencyPolicy,
    HistoryLimits,
    InputObject,
    Job,
    JobCounters,
    JobSpec,
    JobStatus,
    OutputLocation,
    OutputObject,
    RetryBackoff,
    RetryPolicy,
    RunRecord,
    RunState,
    RunTrigger,
    Schedule,
)
from kadence_operator.api.queue import (
    Autoscale,
    DeadLetterPolicy,
    DeliveryPolicy,
    EnvVar,
    Queue,
    QueueSpec,
    QueueStatus,
    ResourceRequirements,
    RetentionPolicy,
    Toleration,
    WorkerCounts,
    Workers,
)
from kadence_operator.api.validation import (
    InvalidResource,
    check_job,
    check_queue,
    cron_has_seconds,
    format_validation_error,
    job_semantic_problems,
    parse_job,
    parse_queue,
    queue_semantic_problems,
    validate_cron,
    validate_payload,
    validate_time_zone,
)

#: The resource models crdgen turns into CRDs, in a stable order.
RESOURCES: tuple[type[ApiModel], ...] = (Queue, Job)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "MAX_BACKFILL_SLOTS",
    "MAX_CATCH_UP_SLOTS",
    "MAX_PAYLOAD_BYTES",
    "RESOURCES",
    "TRIGGER_ANNOTATION",
    "VERSION",
    "ActiveRun",
    "ApiModel",
    "Autoscale",
    "Backfill",
    "BackfillStatus",
    "CatchUp",
    "CelRule",
    "ConcurrencyPolicy",
    "Condition",
    "CrdNames",
    "DeadLetterPolicy",
    "DeliveryPolicy",
    "EnvVar",
    "HistoryLimits",
    "InputObject",
    "InvalidResource",
    "Job",
    "JobCounters",
    "JobSpec",
    "JobStatus",
    "ObjectMeta",
    "OutputLocation",
    "OutputObject",
    "PrinterColumn",
    "Queue",
    "QueueSpec",
    "QueueStatus",
    "ResourceRequirements",
    "RetentionPolicy",
    "RetryBackoff",
    "RetryPolicy",
    "RunRecord",
    "RunState",
    "RunTrigger",
    "Schedule",
    "Toleration",
    "WorkerCounts",
    "Workers",
    "check_job",
    "check_queue",
    "cron_has_seconds",
    "format_duration",
    "format_validation_error",
    "job_semantic_problems",
    "parse_duration",
    "parse_duration_ns",
    "parse_job",
    "parse_queue",
    "queue_semantic_problems",
    "validate_cron",
    "validate_payload",
    "validate_time_zone",
]
