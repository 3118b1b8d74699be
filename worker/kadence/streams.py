"""Creating a Queue's streams without the operator, and learning a Queue's partitions.

The ``ensure_*`` functions create or update the work stream and partition consumers of a Queue,
its dead-letter stream and the results stream, with the configurations of
:mod:`kadence.streamspec` -- the same the operator creates. In a cluster the operator owns the
streams; tests, benchmarks and ``kadence ensure-queue`` call these directly. They are
idempotent: calling them again with new settings updates the stream and consumers in place.

:func:`queue_partitions` is how publishers and consumers learn a Queue's partitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo

from kadence import constants, streamspec


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create the stream, or update it to ``config`` if it exists."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        try:
            return await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            pass  # created concurrently by someone else: update below
    return await js.update_stream(config)


async def ensure_queue_stream(
    js: JetStreamContext,
    *,
    namespace: str,
    queue: str,
    partitions: int = 1,
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    backoff: Sequence[float] = (),
    max_ack_pending: int | None = None,
    replicas: int = 1,
    duplicate_window: float = streamspec.DUPLICATE_WINDOW,
    max_age: float | None = None,
    max_msgs: int | None = None,
    max_bytes: int | None = None,
    discard: streamspec.Discard = "old",
    storage: streamspec.Storage = "file",
) -> StreamInfo:
    """Create or update the work stream of Queue ``namespace/queue`` and its partition consumers.

    See :func:`kadence.streamspec.queue_stream` and :func:`~kadence.streamspec.partition_consumer`
    for what they are. Consumers of partitions beyond ``partitions`` are left alone: they may
    still hold messages (removing them is the operator's decision).
    """
    stream = streamspec.queue_stream(
        namespace=namespace,
        queue=queue,
        partitions=partitions,
        replicas=replicas,
        storage=storage,
        duplicate_window=duplicate_window,
        max_age=max_age,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        discard=discard,
    )
    consumers = streamspec.queue_consumers(
        namespace=namespace,
        queue=queue,
        partitions=partitions,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        backoff=backoff,
        max_ack_pending=max_ack_pending,
        replicas=replicas,
    )
    info = await _ensure_stream(js, stream)
    for consumer in consumers:
        await js.add_consumer(constants.stream_name(namespace, queue), consumer)
    return info


async def ensure_dlq_stream(
    js: JetStreamContext,
    *,
    namespace: str,
    queue: str,
    replicas: int = 1,
    storage: streamspec.Storage = "file",
    max_age: float | None = None,
    duplicate_window: float = streamspec.DUPLICATE_WINDOW,
) -> StreamInfo:
    """Create or update the dead-letter stream of a Queue
    (:func:`kadence.streamspec.dead_letter_stream`)."""
    return await _ensure_stream(
        js,
        streamspec.dead_letter_stream(
            namespace=namespace,
            queue=queue,
            replicas=replicas,
            storage=storage,
            max_age=max_age,
            duplicate_window=duplicate_window,
        ),
    )


async def ensure_results_stream(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    max_age: float | None = streamspec.RESULTS_MAX_AGE,
    duplicate_window: float = streamspec.DUPLICATE_WINDOW,
) -> StreamInfo:
    """Create or update the stream of run results (:func:`kadence.streamspec.results_stream`).

    Only the stream: the operator's durable consumer of it is the operator's to make.
    """
    return await _ensure_stream(
        js,
        streamspec.results_stream(
            replicas=replicas, max_age=max_age, duplicate_window=duplicate_window
        ),
    )


def partition_consumers(names: Sequence[str]) -> list[int]:
    """The partition numbers of the ``partition-<n>`` consumers among ``names``, sorted."""
    return sorted(p for n in names if (p := constants.partition_of(n)) is not None)


async def queue_partitions(js: JetStreamContext, *, namespace: str, queue: str) -> list[int]:
    """The partitions of a Queue: ``range(n)`` from the stream metadata, else its consumers."""
    stream = constants.stream_name(namespace, queue)
    info = await js.stream_info(stream)
    count = (info.config.metadata or {}).get(constants.PARTITIONS_METADATA_KEY)
    if count is not None and count.isdigit() and int(count) > 0:
        return list(range(int(count)))
    consumers = await js.consumers_info(stream)
    found = partition_consumers([c.name for c in consumers if c.name])
    return found or [0]
