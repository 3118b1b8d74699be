"""The ``Queue`` custom resource (``queues.kadence.io``, short name ``kq``).

A Queue is a durable, partitioned work queue: the operator backs it with a NATS JetStream stream
(one subject per partition), a dead-letter stream, and optionally a Deployment of workers that
consume it. Jobs (:mod:`kadence_operator.api.job`) name the Queue their runs are dispatched to.

This module holds the pydantic models for the spec and the status; the CRD schema is generated
from them. Field descriptions are what ``kubectl explain queues.spec...`` prints.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt

from kadence_operator.api.common import (
    DEFAULTED_OBJECT,
    ApiModel,
    CelRule,
    Condition,
    CrdNames,
    DateTime,
    DnsSubdomain,
    Duration,
    IntOrString,
    ObjectMeta,
    PrinterColumn,
    Text,
    conditions_field,
)
from kadence_operator.api.durations import parse_duration

__all__ = [
    "Autoscale",
    "DeadLetterPolicy",
    "DeliveryPolicy",
    "EnvVar",
    "Queue",
    "QueueSpec",
    "QueueStatus",
    "ResourceRequirements",
    "RetentionPolicy",
    "Toleration",
    "WorkerCounts",
    "Workers",
]

#: A Kubernetes resource quantity ("500m", "1Gi", "2") or an integer.
_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


Quantity = Annotated[
    str,
    Text(max_length=64, pattern=_QUANTITY_PATTERN, hint='a quantity such as "500m", "1Gi" or "2"'),
    IntOrString(),
]


class RetentionPolicy(ApiModel):
    """How long messages stay in the queue's stream. Unset limits mean unlimited.

    When a limit is reached, ``discard`` decides whether the oldest messages are dropped or new
    ones are refused.
    """

    max_age: Duration | None = Field(
        None,
        description='Drop messages older than this (e.g. "168h"). Unset: no age limit.',
    )
    max_messages: StrictInt | None = Field(
        None, ge=1, description="Keep at most this many messages in the stream. Unset: no limit."
    )
    max_bytes: StrictInt | None = Field(
        None,
        ge=1,
        description="Keep at most this many bytes of messages in the stream. Unset: no limit.",
    )
    discard: Literal["old", "new"] = Field(
        "old",
        description=(
            "What happens when maxMessages or maxBytes is reached: `old` deletes the oldest "
            "messages to make room, `new` rejects new messages (dispatch fails and is retried)."
        ),
    )


class DeliveryPolicy(ApiModel):
    """How messages are delivered to workers and redelivered when a worker does not acknowledge.

    A message is redelivered when the worker neither acknowledges it within ``ackWait`` nor
    extends the deadline (workers send progress heartbeats for long tasks). After ``maxDeliver``
    deliveries the message goes to the dead-letter stream (if enabled) instead.
    """

    __cel_rules__ = (
        CelRule(
            rule=(
                "!has(self.backoff) || "
                "size(self.backoff) < (has(self.maxDeliver) ? self.maxDeliver : 5)"
            ),
            message="backoff must have fewer entries than maxDeliver",
            field_path=".backoff",
            check=lambda s: len(s.backoff) < s.max_deliver,
        ),
    )

    ack_wait: Duration = Field(
        "30s",
        description=(
            "How long a delivered message may stay unacknowledged before it is redelivered "
            '(Go duration, default "30s"). Ignored for redeliveries when backoff is set.'
        ),
    )
    max_deliver: StrictInt = Field(
        5,
        ge=1,
        le=1000,
        description=(
            "Maximum number of deliveries of one message (first delivery included, default 5). "
            "Then the message is dead-lettered. This is NATS-level redelivery of a message; "
            "task-level retries with backoff are configured on each Job (spec.retryPolicy)."
        ),
    )
    backoff: list[Duration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Delays before each redelivery (Go durations); the last entry repeats. Must have "
            "fewer entries than maxDeliver. Empty: redeliver after ackWait every time."
        ),
    )
    max_ack_pending: StrictInt | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=(
            "Maximum number of messages delivered but not yet acknowledged, across all workers "
            "of the queue (flow control). Unset: the NATS server default (1000)."
        ),
    )


class DeadLetterPolicy(ApiModel):
    """Where messages go when they exhaust their deliveries or their task fails for good.

    Dead-lettered messages are kept in a separate stream for inspection and replay;
    ``status.deadLettered`` counts them.
    """

    enabled: StrictBool = Field(
        True, description="Keep dead-lettered messages (default true). false drops them."
    )
    max_age: Duration | None = Field(
        None,
        description='How long dead-lettered messages are kept (e.g. "720h"). Unset: no limit.',
    )


class Autoscale(ApiModel):
    """Scale the workers with the queue backlog.

    The desired number of workers is ``ceil(pending / backlogPerWorker)``, clamped to
    ``[min, max]``; scaling down waits ``cooldown`` after the last change.
    """

    __cel_rules__ = (
        CelRule(
            rule="!has(self.max) || (has(self.min) ? self.min : 1) <= self.max",
            message="min must be less than or equal to max",
            field_path=".min",
            check=lambda s: s.min <= s.max,
        ),
    )

    min: StrictInt = Field(
        1, ge=0, le=1000, description="Fewest workers (default 1; 0 allows scaling to zero)."
    )
    max: StrictInt = Field(..., ge=1, le=1000, description="Most workers.")
    backlog_per_worker: StrictInt = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Pending messages one worker is expected to handle (default 10).",
    )
    cooldown: Duration = Field(
        "60s",
        description='Minimum time between scale-downs (Go duration, default "60s").',
    )


class EnvVar(ApiModel):
    """An environment variable for the worker containers."""

    name: Annotated[
        str,
        Text(
            max_length=256,
            min_length=1,
            pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
            hint="letters, digits, '_', '-' and '.', not starting with a digit",
        ),
    ] = Field(description="Name of the variable.")
    value: Annotated[str, Text(max_length=32768)] = Field(
        "", description="Value of the variable (default empty)."
    )


class ResourceRequirements(ApiModel):
    """Compute resources of each worker container, as in a Pod spec."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description='Minimum resources, e.g. {cpu: "250m", memory: "256Mi"}.',
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description='Maximum resources, e.g. {memory: "512Mi"}.',
    )


class Toleration(ApiModel):
    """A Pod toleration for the worker Pods (same fields as in a Pod spec)."""

    __cel_rules__ = (
        CelRule(
            rule=(
                "!has(self.operator) || self.operator != 'Exists' || "
                "!has(self.value) || self.value == ''"
            ),
            message="value must be empty when operator is Exists",
            field_path=".value",
            check=lambda s: s.operator != "Exists" or not s.value,
        ),
    )

    key: Annotated[str, Text(max_length=316)] | None = Field(
        None, description="Taint key to tolerate; empty with operator Exists matches all taints."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (the Kubernetes default is Equal)."
    )
    value: Annotated[str, Text(max_length=256)] | None = Field(
        None, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: StrictInt | None = Field(
        None, description="For NoExecute: how long the Pod stays bound after the taint appears."
    )


class Workers(ApiModel):
    """A Deployment of Kadence workers that the operator runs for this queue.

    Leave ``workers`` out to run workers yourself (any process using the kadence SDK can consume
    the queue). Set either ``replicas`` (fixed size) or ``autoscale``, not both; with neither,
    one worker runs.
    """

    __cel_rules__ = (
        CelRule(
            rule="!(has(self.replicas) && has(self.autoscale))",
            message="set either replicas or autoscale, not both",
            field_path=".autoscale",
            reason="FieldValueForbidden",
            check=lambda s: s.replicas is None or s.autoscale is None,
        ),
        CelRule(
            rule="has(self.app) || (has(self.command) && size(self.command) > 0)",
            message="set app (module:attribute of the kadence App) or command",
            field_path=".app",
            reason="FieldValueRequired",
            check=lambda s: s.app is not None or bool(s.command),
        ),
    )

    image: Annotated[str, Text(max_length=512, min_length=1)] = Field(
        description="Container image of the workers; it must contain your tasks and kadence."
    )
    command: list[Annotated[str, Text(max_length=4096)]] = Field(
        default_factory=list,
        max_length=64,
        description="Entrypoint of the worker container. Empty: `kadence worker <app>`.",
    )
    args: list[Annotated[str, Text(max_length=4096)]] = Field(
        default_factory=list,
        max_length=256,
        description="Arguments to the entrypoint.",
    )
    app: (
        Annotated[
            str,
            Text(
                max_length=256,
                pattern=(
                    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                    r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
                ),
                hint='"module:attribute", e.g. "app:app" or "myproject.tasks:app"',
            ),
        ]
        | None
    ) = Field(
        None,
        description=(
            'Import path of the kadence App the workers serve, as "module:attribute" '
            '(e.g. "app:app"). Required unless command is set.'
        ),
    )
    concurrency: StrictInt = Field(
        1, ge=1, le=1024, description="Tasks each worker runs at the same time (default 1)."
    )
    replicas: StrictInt | None = Field(
        None, ge=0, le=1000, description="Fixed number of workers. Exclusive with autoscale."
    )
    autoscale: Autoscale | None = Field(
        None, description="Scale workers with the backlog. Exclusive with replicas."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables of the worker containers.",
    )
    resources: ResourceRequirements | None = Field(
        None, description="CPU/memory requests and limits of each worker container."
    )
    service_account_name: DnsSubdomain | None = Field(
        None, description="ServiceAccount the worker Pods run as."
    )
    node_selector: dict[str, Annotated[str, Text(max_length=256)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels the worker Pods must be scheduled on.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=64,
        description="Tolerations of the worker Pods.",
    )


class QueueSpec(ApiModel):
    """Desired state of a Queue."""

    partitions: StrictInt = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Number of partitions (1-64, default 1). Messages with the same partition key go "
            "to the same partition and are processed in order; different partitions are "
            "processed in parallel."
        ),
    )
    replicas: Literal[1, 3, 5] = Field(
        1,
        description="Copies of each message kept by the NATS cluster: 1, 3 or 5 (default 1).",
    )
    storage: Literal["file", "memory"] = Field(
        "file",
        description=(
            "Where NATS keeps the messages: `file` (durable, default) or `memory` (fast, lost "
            "when the server restarts). Cannot be changed after creation."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "storage is immutable: delete and re-create the Queue to change it",
                }
            ]
        },
    )
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy,
        json_schema_extra=DEFAULTED_OBJECT,
        description="Limits on how much and how long the stream keeps messages.",
    )
    delivery: DeliveryPolicy = Field(
        default_factory=DeliveryPolicy,
        json_schema_extra=DEFAULTED_OBJECT,
        description="Acknowledgement deadline, redelivery and flow control.",
    )
    dead_letter: DeadLetterPolicy = Field(
        default_factory=DeadLetterPolicy,
        json_schema_extra=DEFAULTED_OBJECT,
        description="What happens to messages that cannot be processed.",
    )
    workers: Workers | None = Field(
        None, description="Workers the operator runs for this queue. Unset: bring your own."
    )
    deletion_policy: Literal["Delete", "Retain"] = Field(
        "Delete",
        description=(
            "What happens to the NATS streams when the Queue is deleted: `Delete` (default) "
            "removes them with their messages, `Retain` keeps them."
        ),
    )

    def ack_wait_seconds(self) -> float:
        """``delivery.ackWait`` in seconds."""
        return parse_duration(self.delivery.ack_wait).total_seconds()


class WorkerCounts(ApiModel):
    """Numbers of worker Pods."""

    desired: StrictInt = Field(0, ge=0, description="Workers the operator wants running.")
    ready: StrictInt = Field(0, ge=0, description="Workers that are ready.")


class QueueStatus(ApiModel):
    """Observed state of a Queue, written by the operator."""

    conditions: list[Condition] = conditions_field(
        "Current state. Ready is True when the stream (and the workers, if any) are in place."
    )
    observed_generation: StrictInt | None = Field(
        None, description="The .metadata.generation this status reflects."
    )
    stream: str | None = Field(None, description="Name of the NATS JetStream stream.")
    subjects: list[str] = Field(
        default_factory=list, description="NATS subjects of the stream, one per partition."
    )
    messages: StrictInt | None = Field(None, description="Messages in the stream.")
    bytes: StrictInt | None = Field(None, description="Bytes of messages in the stream.")
    pending: StrictInt | None = Field(
        None, description="Messages not yet delivered to any worker (the backlog)."
    )
    ack_pending: StrictInt | None = Field(
        None, description="Messages delivered to workers and not yet acknowledged."
    )
    redelivered: StrictInt | None = Field(None, description="Messages currently being redelivered.")
    dead_lettered: StrictInt | None = Field(None, description="Messages in the dead-letter stream.")
    workers: WorkerCounts | None = Field(None, description="Worker Pods, when spec.workers is set.")
    last_sync_time: DateTime | None = Field(
        None, description="When the operator last read the stream state from NATS."
    )


class Queue(ApiModel):
    """A durable, partitioned work queue backed by NATS JetStream.

    Jobs (kind Job) dispatch their runs to a Queue in the same namespace; workers consume them.
    Optionally the operator also runs the workers (spec.workers).
    """

    crd: ClassVar[CrdNames] = CrdNames(
        kind="Queue",
        singular="queue",
        plural="queues",
        short_names=("kq",),
        printer_columns=(
            PrinterColumn("Partitions", "integer", ".spec.partitions", "Number of partitions."),
            PrinterColumn("Replicas", "integer", ".spec.replicas", "Copies of each message."),
            PrinterColumn("Pending", "integer", ".status.pending", "Messages not yet delivered."),
            PrinterColumn(
                "Ready",
                "string",
                '.status.conditions[?(@.type=="Ready")].status',
                "Status of the Ready condition.",
            ),
            PrinterColumn(
                "Workers",
                "integer",
                ".status.workers.ready",
                "Ready workers run by the operator.",
                priority=1,
            ),
        ),
    )

    api_version: Literal["kadence.io/v1alpha1"] = Field("kadence.io/v1alpha1", alias="apiVersion")
    kind: Literal["Queue"] = "Queue"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: QueueSpec = Field(description="Desired state of the queue.")
    status: QueueStatus = Field(
        default_factory=QueueStatus, description="Observed state, written by the operator."
    )
