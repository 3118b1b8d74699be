"""kadence.streamspec: the one place a Queue's JetStream configuration is decided.

Pins the configurations it builds (and the JSON nats-py sends for them), and proves that the
operator (``kadence_operator.queues.streams.apply``, the results consumer's set-up) and the SDK
(``kadence.streams.ensure_*``, used by the worker tests and ``kadence ensure-queue``) send
JetStream the same streams and consumers for the same Queue spec: both run here against a fake
JetStream context that records what each would create.
"""

from __future__ import annotations

import ast
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, cast

import nats.js.errors
import pytest
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from kadence import streams, streamspec
from kadence_operator.api import parse_queue
from kadence_operator.queues import streams as operator_streams
from kadence_operator.results import consumer as results_consumer

# ------------------------------------------------------------------------------------------------
# What the builder produces
# ------------------------------------------------------------------------------------------------


def test_queue_stream_defaults() -> None:
    assert streamspec.queue_stream(namespace="team-a", queue="reports") == StreamConfig(
        name="KADENCE_team-a_reports",
        description="Kadence Queue team-a/reports",
        subjects=["kadence.team-a.reports.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=1,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        metadata={"kadence.io/partitions": "1"},
    )


def test_queue_stream_with_every_setting() -> None:
    config = streamspec.queue_stream(
        namespace="team-a",
        queue="reports",
        partitions=4,
        replicas=3,
        storage="memory",
        duplicate_window=300,
        max_age=3600,
        max_msgs=1000,
        max_bytes=1 << 20,
        discard="new",
    )
    # What nats-py sends for it (durations in nanoseconds), besides nats-py's own defaults.
    expected = {
        "name": "KADENCE_team-a_reports",
        "description": "Kadence Queue team-a/reports",
        "subjects": ["kadence.team-a.reports.*"],
        "retention": "workqueue",
        "storage": "memory",
        "num_replicas": 3,
        "max_age": 3600 * 10**9,
        "max_msgs": 1000,
        "max_bytes": 1 << 20,
        "discard": "new",
        "duplicate_window": 300 * 10**9,
        "metadata": {"kadence.io/partitions": "4"},
    }
    wire = json.loads(json.dumps(config.as_dict()))
    assert {key: wire.get(key) for key in expected} == expected


def test_partition_consumer() -> None:
    assert streamspec.partition_consumer(
        namespace="team-a",
        queue="reports",
        partition=2,
        ack_wait=45,
        max_deliver=4,
        backoff=[1, 60],
        max_ack_pending=50,
        replicas=3,
    ) == ConsumerConfig(
        durable_name="partition-2",
        name="partition-2",
        description="partition 2 of team-a/reports",
        filter_subject="kadence.team-a.reports.2",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=45,
        max_deliver=4,
        backoff=[1, 60],
        max_ack_pending=50,
        num_replicas=3,
    )


def test_partition_consumer_defaults_leave_backoff_and_max_ack_pending_to_the_server() -> None:
    config = streamspec.partition_consumer(namespace="ns", queue="q", partition=0)
    assert (config.ack_wait, config.max_deliver, config.num_replicas) == (30.0, 5, 1)
    assert config.backoff is None
    assert config.max_ack_pending is None
    assert "backoff" not in config.as_dict()
    assert "max_ack_pending" not in config.as_dict()


def test_queue_consumers_one_per_partition() -> None:
    configs = streamspec.queue_consumers(namespace="ns", queue="q", partitions=3, ack_wait=12)
    assert [c.durable_name for c in configs] == ["partition-0", "partition-1", "partition-2"]
    assert [c.filter_subject for c in configs] == [f"kadence.ns.q.{p}" for p in range(3)]
    assert {c.ack_wait for c in configs} == {12}


def test_dead_letter_stream() -> None:
    assert streamspec.dead_letter_stream(namespace="team-a", queue="reports") == StreamConfig(
        name="KADENCE_DLQ_team-a_reports",
        description="Dead letters of Kadence Queue team-a/reports",
        subjects=["kadence-dlq.team-a.reports"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=1,
        max_age=0,
        duplicate_window=120.0,
    )
    memory = streamspec.dead_letter_stream(
        namespace="ns", queue="q", replicas=3, storage="memory", max_age=60, duplicate_window=30
    )
    assert (memory.storage, memory.num_replicas, memory.max_age, memory.duplicate_window) == (
        StorageType.MEMORY,
        3,
        60,
        30,
    )


def test_results_stream() -> None:
    assert streamspec.results_stream() == StreamConfig(
        name="KADENCE_RESULTS",
        description="Kadence run results, folded into Job status by the operator",
        subjects=["kadence-results.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=1,
        max_age=7 * 24 * 3600,
        duplicate_window=120.0,
    )
    assert streamspec.results_stream(max_age=None).max_age == 0


def test_the_builder_refuses_what_jetstream_would() -> None:
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        streamspec.queue_stream(namespace="ns", queue="q", partitions=0)
    with pytest.raises(ValueError, match="fewer entries than max_deliver"):
        streamspec.partition_consumer(
            namespace="ns", queue="q", partition=0, max_deliver=2, backoff=[1, 2]
        )


def test_the_builder_does_no_io() -> None:
    """Only the standard library's typing helpers, nats-py's config types and the names."""
    tree = ast.parse(inspect.getsource(streamspec))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "collections.abc", "typing", "nats.js.api", "kadence"}


# ------------------------------------------------------------------------------------------------
# The operator and the SDK create the same
# ------------------------------------------------------------------------------------------------


@dataclass
class RecordingJetStream:
    """Just enough of a JetStreamContext for stream set-up: nothing exists, everything is
    created, and each stream and consumer is recorded as nats-py would send it."""

    created: dict[str, StreamConfig | ConsumerConfig] = field(default_factory=dict)

    async def stream_info(self, name: str) -> Any:
        raise nats.js.errors.NotFoundError

    async def consumers_info(self, stream: str) -> list[Any]:
        return []

    async def add_stream(self, config: StreamConfig, **params: Any) -> Any:
        config = config.evolve(**params)
        self.created[f"stream {config.name}"] = config
        return config

    async def add_consumer(self, stream: str, config: ConsumerConfig, **params: Any) -> Any:
        config = config.evolve(**params)
        self.created[f"consumer {stream}/{config.durable_name}"] = config
        return config


#: Queue specs as the operator reads them, and the same Queue as SDK arguments.
QUEUES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}, {}),
    "every setting": (
        {
            "partitions": 3,
            "replicas": 3,
            "storage": "memory",
            "retention": {
                "maxAge": "1h",
                "maxMessages": 1000,
                "maxBytes": 1 << 20,
                "discard": "new",
            },
            "delivery": {
                "ackWait": "45s",
                "maxDeliver": 4,
                "backoff": ["1s", "1m"],
                "maxAckPending": 50,
            },
            "deadLetter": {"maxAge": "720h"},
        },
        {
            "partitions": 3,
            "replicas": 3,
            "storage": "memory",
            "max_age": 3600,
            "max_msgs": 1000,
            "max_bytes": 1 << 20,
            "discard": "new",
            "ack_wait": 45,
            "max_deliver": 4,
            "backoff": [1, 60],
            "max_ack_pending": 50,
        },
        {"replicas": 3, "storage": "memory", "max_age": 720 * 3600},
    ),
}


@pytest.mark.parametrize("case", QUEUES, ids=str)
async def test_the_operator_and_the_sdk_create_the_same_queue(case: str) -> None:
    spec_body, queue_args, dlq_args = QUEUES[case]
    spec = parse_queue({"metadata": {"name": "reports", "namespace": "team-a"}, "spec": spec_body})

    by_operator = RecordingJetStream()
    await operator_streams.apply(
        cast(Any, by_operator),
        operator_streams.QueueRef("team-a", "reports"),
        spec,
        duplicate_window=90,
    )
    by_sdk = RecordingJetStream()
    js = cast(Any, by_sdk)
    await streams.ensure_queue_stream(
        js, namespace="team-a", queue="reports", duplicate_window=90, **queue_args
    )
    await streams.ensure_dlq_stream(
        js, namespace="team-a", queue="reports", duplicate_window=90, **dlq_args
    )

    partitions = spec.partitions
    assert sorted(by_operator.created) == sorted(
        [
            "stream KADENCE_team-a_reports",
            "stream KADENCE_DLQ_team-a_reports",
            *(f"consumer KADENCE_team-a_reports/partition-{p}" for p in range(partitions)),
        ]
    )
    assert by_sdk.created == by_operator.created
    # And so on the wire.
    assert {k: c.as_dict() for k, c in by_sdk.created.items()} == {
        k: c.as_dict() for k, c in by_operator.created.items()
    }


async def test_the_operator_and_the_sdk_create_the_same_results_stream() -> None:
    by_operator = RecordingJetStream()
    await results_consumer.ensure_results_stream(
        cast(Any, by_operator), duplicate_window=90, ack_wait=60
    )
    by_sdk = RecordingJetStream()
    # The operator asks for 3 replicas first (and 1 where JetStream is not clustered).
    await streams.ensure_results_stream(cast(Any, by_sdk), replicas=3, duplicate_window=90)
    assert by_sdk.created["stream KADENCE_RESULTS"] == by_operator.created["stream KADENCE_RESULTS"]
