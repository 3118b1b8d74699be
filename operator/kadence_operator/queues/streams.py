"""A Queue's JetStream objects: the desired configuration (pure) and applying it.

One work-queue stream per Queue (``constants.stream_name``) over the subjects
``kadence.<namespace>.<queue>.<partition>``, one durable pull consumer per partition with explicit
ack, and a dead-letter stream, configured by :mod:`kadence.streamspec` (with which the SDK's
``kadence.streams`` makes the same streams for tests and development set-ups). Mutable settings
are updated in place; changes JetStream cannot make in place (storage type, fewer partitions) are
refused with :class:`ImmutableChange`, never applied by deleting messages. A configuration the
NATS deployment cannot host (3 replicas on a single server, more storage than it has) is refused
by JetStream; :func:`apply` reports that as :class:`StreamRejected`, naming the field, so it is
not mistaken for NATS being down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from kadence import constants, streamspec
from kadence_operator.api import QueueSpec, parse_duration

#: JetStream errors meaning "cannot place this many replicas": not clustered, no suitable peers,
#: insufficient resources.
_NO_REPLICA_PLACEMENT = (10074, 10005, 10023)
#: Replicas of the operator's own streams (results, advisories) where JetStream is clustered.
OPERATOR_STREAM_REPLICAS = 3


async def ensure_operator_stream(js: JetStreamContext, config: jsapi.StreamConfig) -> None:
    """Create one of the operator's own streams, replicated where NATS can replicate it.

    Three replicas where JetStream is clustered with enough servers (losing one then loses no
    result or advisory), one on a single server. An existing stream with fewer replicas (created
    before the cluster grew, or by an older operator) is raised in place where the cluster allows;
    its other settings, and what it holds, are kept.
    """
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config=config, num_replicas=OPERATOR_STREAM_REPLICAS)
        except APIError as error:
            if error.err_code not in _NO_REPLICA_PLACEMENT:
                raise
            await js.add_stream(config=config, num_replicas=1)
        return
    current = info.config
    changes: dict[str, object] = {}
    if list(current.subjects or []) != list(config.subjects or []):
        changes["subjects"] = config.subjects
    if (current.num_replicas or 1) < OPERATOR_STREAM_REPLICAS:
        try:
            await js.update_stream(config=current, num_replicas=OPERATOR_STREAM_REPLICAS, **changes)
        except APIError as error:
            if error.err_code not in _NO_REPLICA_PLACEMENT:
                raise
        else:
            await _wait_for_leader(js, config.name)
            return
    if changes:
        await js.update_stream(config=current, **changes)


#: How long to wait for a stream whose replicas just changed to elect a leader.
_LEADER_WAIT = 15.0


async def _wait_for_leader(js: JetStreamContext, stream: str) -> None:
    """Wait (bounded) until a stream whose replicas just changed has elected a leader: creating a
    consumer before that fails with "insufficient resources"."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_LEADER_WAIT):
            while True:
                info = await js.stream_info(stream)
                if info.cluster is None or info.cluster.leader:
                    return
                await asyncio.sleep(0.2)


class ImmutableChange(ValueError):
    """The spec asks for a change JetStream cannot make in place; the message says what to do."""


class StreamRejected(ValueError):
    """JetStream refused the configuration (not a transient failure); the message names the field.

    Retrying the same request does not help until the NATS deployment changes (more servers, more
    storage) or the spec does.
    """


#: JetStream error codes meaning "this server or cluster cannot host it", with the field to blame.
_REJECTION_FIELDS: dict[int, str] = {
    10074: "spec.replicas",  # replicas > 1 not supported in non-clustered mode
    10005: "spec.replicas",  # no suitable peers for placement
    10023: "spec.replicas",  # insufficient resources
    10047: "spec.retention.maxBytes",  # insufficient storage resources available
    10028: "spec.retention.maxBytes",  # insufficient memory resources available
}


def rejection(error: BaseException, *, stream: str) -> str | None:
    """The ``Ready`` message for a JetStream refusal, or None for a transient failure.

    Only answers from JetStream count as refusals: a 400, or a 500 with one of the codes above.
    Timeouts, lost connections, 503 (no quorum, leader election) and 404 are transient.
    """
    if not isinstance(error, APIError) or isinstance(
        error, NotFoundError | ServiceUnavailableError
    ):
        return None
    where = _REJECTION_FIELDS.get(error.err_code or 0)
    if where is None and error.code != 400:
        return None
    return (
        f"{where or 'spec'}: JetStream refused stream {stream}: {error.description} "
        f"(error {error.err_code})"
    )


@dataclass(frozen=True)
class QueueRef:
    namespace: str
    name: str

    @property
    def stream(self) -> str:
        return constants.stream_name(self.namespace, self.name)

    @property
    def dlq_stream(self) -> str:
        return constants.dlq_stream_name(self.namespace, self.name)


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration).total_seconds() if duration else None


def desired_stream(
    ref: QueueRef, spec: QueueSpec, *, duplicate_window: float
) -> jsapi.StreamConfig:
    retention = spec.retention
    return streamspec.queue_stream(
        namespace=ref.namespace,
        queue=ref.name,
        partitions=spec.partitions,
        replicas=spec.replicas,
        storage=spec.storage,
        duplicate_window=duplicate_window,
        max_age=_seconds(retention.max_age),
        max_msgs=retention.max_messages,
        max_bytes=retention.max_bytes,
        discard=retention.discard,
    )


def desired_dlq(
    ref: QueueRef, spec: QueueSpec, *, duplicate_window: float = streamspec.DUPLICATE_WINDOW
) -> jsapi.StreamConfig | None:
    if not spec.dead_letter.enabled:
        return None
    return streamspec.dead_letter_stream(
        namespace=ref.namespace,
        queue=ref.name,
        replicas=spec.replicas,
        storage=spec.storage,
        max_age=_seconds(spec.dead_letter.max_age),
        duplicate_window=duplicate_window,
    )


def desired_consumers(ref: QueueRef, spec: QueueSpec) -> list[jsapi.ConsumerConfig]:
    delivery = spec.delivery
    return streamspec.queue_consumers(
        namespace=ref.namespace,
        queue=ref.name,
        partitions=spec.partitions,
        ack_wait=spec.ack_wait_seconds(),
        max_deliver=delivery.max_deliver,
        backoff=[s for d in delivery.backoff if (s := _seconds(d)) is not None],
        max_ack_pending=delivery.max_ack_pending,
        replicas=spec.replicas,
    )


def immutable_changes(
    *,
    current: jsapi.StreamConfig,
    desired: jsapi.StreamConfig,
    current_partitions: int,
    spec: QueueSpec,
) -> list[str]:
    """Changes JetStream cannot apply in place, each with what to do instead."""
    problems = []
    have, want = _plain(current.storage), _plain(desired.storage)
    if have is not None and have != want:
        problems.append(
            f"spec.storage: cannot change from {have} to {want} in place; create a new Queue "
            f"and move the Jobs to it, or set it back to {have}"
        )
    if spec.partitions < current_partitions:
        problems.append(
            f"spec.partitions: cannot shrink from {current_partitions} to {spec.partitions} "
            f"without losing the messages of the removed partitions; create a new Queue, or set it "
            f"back to {current_partitions}"
        )
    return problems


async def current_partitions(js: JetStreamContext, ref: QueueRef) -> int:
    """Partitions that exist now (highest partition consumer + 1)."""
    count = 0
    for info in await js.consumers_info(ref.stream):
        partition = constants.partition_of(info.name or "")
        if partition is not None:
            count = max(count, partition + 1)
    return count


async def apply(
    js: JetStreamContext, ref: QueueRef, spec: QueueSpec, *, duplicate_window: float
) -> list[str]:
    """Create or update the stream, consumers and DLQ. Returns what was created or restored.

    Raises :class:`ImmutableChange` and changes nothing when the spec cannot be applied in place,
    and :class:`StreamRejected` when JetStream refuses the configuration. Other errors (NATS
    unreachable, no quorum) propagate as they are.
    """
    try:
        return await _apply(js, ref, spec, duplicate_window=duplicate_window)
    except APIError as error:
        message = rejection(error, stream=ref.stream)
        if message is None:
            raise
        raise StreamRejected(message) from error


async def _apply(
    js: JetStreamContext, ref: QueueRef, spec: QueueSpec, *, duplicate_window: float
) -> list[str]:
    changes: list[str] = []
    desired = desired_stream(ref, spec, duplicate_window=duplicate_window)
    try:
        info = await js.stream_info(ref.stream)
    except NotFoundError:
        await js.add_stream(config=desired)
        changes.append(f"created stream {ref.stream}")
    else:
        partitions = await current_partitions(js, ref)
        problems = immutable_changes(
            current=info.config, desired=desired, current_partitions=partitions, spec=spec
        )
        if problems:
            raise ImmutableChange("; ".join(problems))
        if _differs(info.config, desired):
            await js.update_stream(config=desired)
            changes.append(f"updated stream {ref.stream}")
    existing = {c.name: c for c in await js.consumers_info(ref.stream)}
    for consumer in desired_consumers(ref, spec):
        name = consumer.durable_name or ""
        have = existing.get(name)
        if have is None:
            await js.add_consumer(ref.stream, config=consumer)
            changes.append(f"created consumer {name}")
        elif _consumer_differs(have.config, consumer):
            await js.add_consumer(ref.stream, config=consumer)
            changes.append(f"updated consumer {name}")
    dlq = desired_dlq(ref, spec, duplicate_window=duplicate_window)
    if dlq is not None:
        try:
            dlq_info = await js.stream_info(ref.dlq_stream)
        except NotFoundError:
            await js.add_stream(config=dlq)
            changes.append(f"created stream {ref.dlq_stream}")
        else:
            if _differs(dlq_info.config, dlq):
                await js.update_stream(config=dlq)
                changes.append(f"updated stream {ref.dlq_stream}")
    return changes


_STREAM_FIELDS = (
    "subjects",
    "num_replicas",
    "max_age",
    "max_msgs",
    "max_bytes",
    "discard",
    "duplicate_window",
)
_CONSUMER_FIELDS: tuple[str, ...] = (
    "ack_wait",
    "max_deliver",
    "backoff",
    "max_ack_pending",
    "filter_subject",
)


def _plain(value: object) -> object:
    """Enums and strings compare alike (the server's answers come back as plain strings)."""
    return getattr(value, "value", value)


def _same(current: object, desired: object) -> bool:
    # A field left unset in the desired config takes the server's default: not a difference.
    return desired is None or _plain(current) == _plain(desired)


def _differs(current: jsapi.StreamConfig, desired: jsapi.StreamConfig) -> bool:
    if not all(_same(getattr(current, f), getattr(desired, f)) for f in _STREAM_FIELDS):
        return True
    # The server adds its own metadata keys (``_nats.*``); only ours are compared.
    have, want = current.metadata or {}, desired.metadata or {}
    return any(have.get(key) != value for key, value in want.items())


def _consumer_differs(current: jsapi.ConsumerConfig, desired: jsapi.ConsumerConfig) -> bool:
    fields = _CONSUMER_FIELDS
    if desired.backoff:
        # With a backoff list JetStream uses its first step as the ack wait of the first delivery
        # and reports that as ack_wait; the spec's ackWait is not what it echoes back.
        fields = tuple(f for f in fields if f != "ack_wait")
    return not all(_same(getattr(current, f), getattr(desired, f)) for f in fields)


async def delete(js: JetStreamContext, ref: QueueRef) -> list[str]:
    """Remove the stream (its consumers go with it) and the DLQ."""
    removed = []
    for name in (ref.stream, ref.dlq_stream):
        try:
            await js.delete_stream(name)
            removed.append(name)
        except NotFoundError:
            pass
    return removed
