"""The JetStream configuration of a Queue and of the results stream, built in one place (pure).

The operator (``kadence_operator.queues.streams``, from a Queue's spec) and the SDK's
:mod:`kadence.streams` (tests, benchmarks, ``kadence ensure-queue``) both build the streams and
consumers they create with these functions, so the streams workers are tested on are the streams
production runs on. Nothing here does I/O: each function takes plain values and returns the
nats-py ``StreamConfig`` or ``ConsumerConfig`` to send.

Durations are in seconds. Limits left at ``None`` are spelt out as JetStream's "no limit"
(``max_age`` 0, ``max_msgs`` and ``max_bytes`` -1) rather than left unset, so that comparing a
live stream with the desired configuration sees a limit that was removed.

Names come from :mod:`kadence.constants`: a Queue ``ns/q`` is the work-queue stream
``KADENCE_ns_q`` with subjects ``kadence.ns.q.<partition>``, one durable pull consumer
``partition-<n>`` per partition (shared by all workers of the Queue), and the dead-letter stream
``KADENCE_DLQ_ns_q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from kadence import constants

#: Where JetStream keeps a stream's messages (a Queue's ``spec.storage``).
Storage = Literal["file", "memory"]
#: What a full stream does (a Queue's ``spec.retention.discard``).
Discard = Literal["old", "new"]

#: How long a results-stream message is kept: 7 days.
RESULTS_MAX_AGE = 7 * 24 * 3600.0
#: The de-duplication window unless told otherwise (the operator's ``KADENCE_DUPLICATE_WINDOW``
#: default).
DUPLICATE_WINDOW = 120.0


def queue_stream(
    *,
    namespace: str,
    queue: str,
    partitions: int = 1,
    replicas: int = 1,
    storage: Storage = "file",
    duplicate_window: float = DUPLICATE_WINDOW,
    max_age: float | None = None,
    max_msgs: int | None = None,
    max_bytes: int | None = None,
    discard: Discard = "old",
) -> StreamConfig:
    """The work stream of Queue ``namespace/queue``.

    Work-queue retention (a message is gone once acknowledged), subjects ``kadence.<ns>.<q>.*``,
    a de-duplication window for ``Nats-Msg-Id`` (the run id), and the partition count in its
    metadata, where publishers read it.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return StreamConfig(
        name=constants.stream_name(namespace, queue),
        description=f"Kadence Queue {namespace}/{queue}",
        subjects=[constants.subjects_wildcard(namespace, queue)],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType(storage),
        num_replicas=replicas,
        max_age=max_age or 0,
        max_msgs=max_msgs if max_msgs is not None else -1,
        max_bytes=max_bytes if max_bytes is not None else -1,
        discard=DiscardPolicy(discard),
        duplicate_window=duplicate_window,
        metadata={constants.PARTITIONS_METADATA_KEY: str(partitions)},
    )


def partition_consumer(
    *,
    namespace: str,
    queue: str,
    partition: int,
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    backoff: Sequence[float] = (),
    max_ack_pending: int | None = None,
    replicas: int = 1,
) -> ConsumerConfig:
    """The durable pull consumer ``partition-<partition>``: explicit acks, its subject only.

    ``backoff`` (seconds) are JetStream's redelivery delays; the server then uses ``backoff[0]``
    as the ack wait, and it must have fewer entries than ``max_deliver``. ``max_ack_pending``
    None leaves the server's default (1000).
    """
    if backoff and len(backoff) >= max_deliver:
        raise ValueError("backoff must have fewer entries than max_deliver")
    name = constants.consumer_name(partition)
    return ConsumerConfig(
        durable_name=name,
        name=name,
        description=f"partition {partition} of {namespace}/{queue}",
        filter_subject=constants.subject(namespace, queue, partition),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        backoff=list(backoff) or None,
        max_ack_pending=max_ack_pending,
        num_replicas=replicas,
    )


def queue_consumers(
    *,
    namespace: str,
    queue: str,
    partitions: int = 1,
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    backoff: Sequence[float] = (),
    max_ack_pending: int | None = None,
    replicas: int = 1,
) -> list[ConsumerConfig]:
    """:func:`partition_consumer` of each partition ``0 .. partitions - 1``."""
    return [
        partition_consumer(
            namespace=namespace,
            queue=queue,
            partition=partition,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            backoff=backoff,
            max_ack_pending=max_ack_pending,
            replicas=replicas,
        )
        for partition in range(partitions)
    ]


def dead_letter_stream(
    *,
    namespace: str,
    queue: str,
    replicas: int = 1,
    storage: Storage = "file",
    max_age: float | None = None,
    duplicate_window: float = DUPLICATE_WINDOW,
) -> StreamConfig:
    """The dead-letter stream of a Queue: limits retention, kept for inspection and replay.

    Same storage and replicas as the Queue's work stream. The duplicate window is explicit (the
    dataclass default would differ from the server's every time); dead-lettered copies carry
    ``Nats-Msg-Id: dlq:<stream>:<seq>``, so a repeated move within it keeps one.
    """
    return StreamConfig(
        name=constants.dlq_stream_name(namespace, queue),
        description=f"Dead letters of Kadence Queue {namespace}/{queue}",
        subjects=[constants.dlq_subject(namespace, queue)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType(storage),
        num_replicas=replicas,
        max_age=max_age or 0,
        duplicate_window=duplicate_window,
    )


def results_stream(
    *,
    replicas: int = 1,
    max_age: float | None = RESULTS_MAX_AGE,
    duplicate_window: float = DUPLICATE_WINDOW,
) -> StreamConfig:
    """The stream of run results (``kadence-results.>``, limits retention, on file).

    The de-duplication window drops repeated reports (``Nats-Msg-Id`` = ``runId:attempt:state``).
    The operator replaces ``replicas`` with 3 where JetStream is clustered.
    """
    return StreamConfig(
        name=constants.RESULTS_STREAM,
        description="Kadence run results, folded into Job status by the operator",
        subjects=[constants.RESULTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=max_age or 0,
        duplicate_window=duplicate_window,
    )
