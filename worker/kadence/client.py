"""The Kadence SDK client: put work on a Queue, read it, publish and read run results.

:class:`KadenceClient` is what applications use to put work on a Queue (``publish``, ``enqueue``)
and to read it (``consume``); the worker runtime is built on it too. It learns a Queue's
partitions and ack wait from the server (:class:`QueueInfo`).

The parts it is built on have modules of their own: :mod:`kadence.requests` (the request
multiplexer it publishes through), :mod:`kadence.consumer` (pull consumers and the messages they
deliver), :mod:`kadence.slots`, and :mod:`kadence.streams` (a Queue's streams made without the
operator, configured by :mod:`kadence.streamspec`). Dead-letter headers are in
:mod:`kadence.deadletter`.

Names come from :mod:`kadence.constants`: a Queue ``ns/q`` is the work-queue stream
``KADENCE_ns_q`` with subjects ``kadence.ns.q.<partition>`` and one durable pull consumer
``partition-<n>`` per partition, shared by all workers of the Queue.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck

from kadence import constants
from kadence._nats import DirectNATS
from kadence.config import Settings, nats_event_callbacks
from kadence.consumer import QueueConsumer
from kadence.partitioning import partition_for
from kadence.protocol import (
    ConcurrencyPolicy,
    JobRef,
    ObjectRef,
    OutputLocation,
    RetryPolicy,
    RunRequest,
    RunResult,
    decode_results,
    decode_run,
    encode,
    results_message,
)
from kadence.requests import Requests
from kadence.streams import queue_partitions

log = logging.getLogger("kadence.client")

#: How long a learned partition count / ack wait is trusted before asking the server again.
_QUEUE_INFO_TTL = 30.0


def new_run_id() -> str:
    """A fresh id for an ad-hoc run."""
    return f"adhoc-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class QueueInfo:
    """What a publisher needs to know about a Queue, learned from the server."""

    namespace: str
    queue: str
    partitions: list[int]
    ack_wait: float
    fetched_at: float

    @property
    def stream(self) -> str:
        return constants.stream_name(self.namespace, self.queue)

    @property
    def partition_count(self) -> int:
        return max(self.partitions) + 1 if self.partitions else 1


class KadenceClient:
    """Publish to and consume from Kadence Queues of one namespace over NATS JetStream."""

    def __init__(self, nc: NATS, *, namespace: str = "default") -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        #: Publishes and double acks on the hot paths (see :class:`~kadence.requests.Requests`).
        self.requests = Requests(nc)
        self.namespace = namespace
        self._queues: dict[str, QueueInfo] = {}

    def __repr__(self) -> str:
        return f"KadenceClient(namespace={self.namespace!r}, connected={self.nc.is_connected})"

    @classmethod
    async def connect(
        cls,
        settings: Settings | None = None,
        *,
        namespace: str | None = None,
        **options: Any,
    ) -> KadenceClient:
        """Connect with ``settings`` (default: from the environment); ``options`` go to NATS."""
        settings = settings or Settings.from_env()
        nc = DirectNATS()
        connect_options: dict[str, Any] = settings.nats_options()
        connect_options.update(
            nats_event_callbacks(log, closing=lambda: nc.is_closed or nc.is_draining)
        )
        connect_options.update(options)
        await nc.connect(**connect_options)
        return cls(nc, namespace=namespace or settings.namespace)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- queues -----------------------------------------------------------------------------

    async def queue_info(self, queue: str, *, refresh: bool = False) -> QueueInfo:
        """Partitions and ack wait of ``queue`` (cached for 30 s)."""
        cached = self._queues.get(queue)
        if (
            cached is not None
            and not refresh
            and time.monotonic() - cached.fetched_at < _QUEUE_INFO_TTL
        ):
            return cached
        partitions = await queue_partitions(self.js, namespace=self.namespace, queue=queue)
        stream = constants.stream_name(self.namespace, queue)
        ack_wait = 30.0
        try:
            consumer = await self.js.consumer_info(stream, constants.consumer_name(partitions[0]))
            ack_wait = float(consumer.config.ack_wait or ack_wait)
        except nats.js.errors.NotFoundError:
            pass
        info = QueueInfo(self.namespace, queue, partitions, ack_wait, time.monotonic())
        self._queues[queue] = info
        return info

    async def publish(
        self,
        queue: str,
        data: bytes | str,
        *,
        key: str | None = None,
        msg_id: str | None = None,
        partition: int | None = None,
        partitions: int | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> PubAck:
        """Publish ``data`` to ``queue`` and wait for JetStream to store it.

        The partition is ``partition`` if given, else ``partition_for(key)`` over the Queue's
        partitions (``partitions``, or learned from the server), keyed by ``key`` or else
        ``msg_id``; a message with neither goes to a random partition. ``msg_id`` becomes the
        ``Nats-Msg-Id``: the same id within the stream's duplicate window is stored once.
        """
        if partition is None:
            count = partitions or (await self.queue_info(queue)).partition_count
            routing = key if key is not None else msg_id
            partition = (
                partition_for(routing, count) if routing is not None else random.randrange(count)
            )
        elif partition < 0:
            raise ValueError(f"partition must be >= 0, got {partition}")
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs[constants.MSG_ID_HEADER] = msg_id
        payload = data.encode() if isinstance(data, str) else data
        return await self.requests.publish(
            constants.subject(self.namespace, queue, partition),
            payload,
            timeout=timeout,
            stream=constants.stream_name(self.namespace, queue),
            headers=hdrs or None,
        )

    def consume(
        self,
        queue: str,
        *,
        partitions: Sequence[int] | None = None,
        batch: int = 10,
        fetch_timeout: float = 5.0,
    ) -> QueueConsumer:
        """Messages from the Queue's partition consumers: ``async for message in ...``.

        At most ``batch`` fetched messages wait to be taken; the caller acknowledges each
        (``ack``/``nak``/``term``). Close it (``aclose()`` or ``async with``) to put the fetched
        but untaken messages back at once (closing waits for a fetch in flight to end, at most
        ``fetch_timeout``). A timeout around ``anext()`` (``asyncio.wait_for``)
        leaves the consumer usable.
        """

        async def partitions_to_read() -> Sequence[int]:
            if partitions is not None:
                return partitions
            return (await self.queue_info(queue)).partitions

        return QueueConsumer(
            self.js,
            self.requests,
            stream=constants.stream_name(self.namespace, queue),
            partitions=partitions_to_read,
            batch=batch,
            fetch_timeout=fetch_timeout,
        )

    async def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        queue: str,
        key: str | None = None,
        run_id: str | None = None,
        timeout_seconds: float | None = None,
        retry: RetryPolicy | None = None,
        input: ObjectRef | None = None,
        output: OutputLocation | None = None,
        scheduled_at: datetime | None = None,
        job: JobRef | None = None,
        concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
    ) -> RunRequest:
        """Run ``task`` once with ``payload`` on ``queue`` (an ad-hoc run unless ``job``).

        Returns the published request; its ``run_id`` (fresh unless given) is also the
        ``Nats-Msg-Id``, so enqueueing the same ``run_id`` twice runs it once. Raises
        :class:`~kadence.protocol.DecodeError` if a worker would refuse the request (too big).
        """
        info = await self.queue_info(queue)
        request = RunRequest(
            run_id=run_id or new_run_id(),
            task=task,
            payload=payload,
            job=job,
            input=input,
            output=output,
            scheduled_at=scheduled_at,
            timeout_seconds=timeout_seconds,
            retry=retry or RetryPolicy(),
            concurrency_policy=concurrency_policy,
            ack_wait_seconds=info.ack_wait,
            dlq_subject=constants.dlq_subject(self.namespace, queue),
            partition_key=key,
        )
        data = encode(request)
        decode_run(data)  # the same checks a worker makes: fail here, not in the DLQ
        await self.publish(queue, data, key=key or request.run_id, msg_id=request.run_id)
        return request

    # -- results ----------------------------------------------------------------------------

    async def publish_result(
        self,
        result: RunResult,
        *,
        namespace: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> PubAck:
        """Publish a run result to ``kadence-results.<ns>.<job>`` (de-duplicated)."""
        return await self.publish_report(
            self.result_subject(result, namespace),
            encode(result),
            msg_id=result.dedupe_id,
            timeout=timeout,
        )

    async def publish_results(
        self,
        results: Sequence[RunResult],
        *,
        namespace: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> PubAck:
        """Publish several results of one subject (:meth:`result_subject`) in one message.

        One result goes out as :meth:`publish_result` sends it; more as a
        :class:`~kadence.protocol.ResultBatch`, de-duplicated by its results' ids. One
        ``PubAck`` covers them all: stored together or not at all.
        """
        payload, msg_id = results_message(results)
        subject = self.result_subject(results[0], namespace)
        if any(self.result_subject(r, namespace) != subject for r in results[1:]):
            raise ValueError("a result batch takes the results of one subject (one Job)")
        return await self.publish_report(subject, payload, msg_id=msg_id, timeout=timeout)

    async def publish_report(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> PubAck:
        """Publish an encoded result or result batch to the results stream, de-duplicated by
        ``msg_id``, and wait for its ``PubAck`` (what :meth:`publish_results` sends)."""
        return await self.requests.publish(
            subject,
            payload,
            timeout=timeout,
            stream=constants.RESULTS_STREAM,
            headers={constants.MSG_ID_HEADER: msg_id},
        )

    def result_subject(self, result: RunResult, namespace: str | None = None) -> str:
        """``kadence-results.<ns>.<job>`` of ``result`` (``_adhoc`` for runs without a Job)."""
        if result.job is not None:
            return constants.results_subject(result.job.namespace, result.job.name)
        return constants.results_subject(namespace or self.namespace, constants.ADHOC_JOB)

    async def announce_result(self, result: RunResult, *, namespace: str | None = None) -> None:
        """Publish an advisory result (``Running``) without waiting for JetStream's ack.

        The results stream stores it all the same (same subject, same de-duplication id); only
        the round trip is saved. Sent from a timer, it may even land after the final report;
        the operator's fold then ignores it (a final state is never overwritten). Should it be
        lost (the stream briefly unavailable), the run's final result still ends it in the Job's
        status: nothing depends on seeing ``Running`` first.
        """
        await self.nc.publish(
            self.result_subject(result, namespace),
            encode(result),
            headers={
                constants.MSG_ID_HEADER: result.dedupe_id,
                "Nats-Expected-Stream": constants.RESULTS_STREAM,
            },
        )

    async def results(
        self, *, job: str | None = None, namespace: str | None = None, idle: float = 1.0
    ) -> list[RunResult]:
        """Every stored result of ``job`` (ad-hoc runs when None), oldest first.

        Reads until no new result arrives for ``idle`` seconds.
        """
        found: list[RunResult] = []
        async for result in self._read_results(job=job, namespace=namespace, idle=idle):
            found.append(result)
        return found

    async def wait_result(
        self,
        run_id: str,
        *,
        job: str | None = None,
        namespace: str | None = None,
        wait: float = 60.0,
    ) -> RunResult:
        """Wait up to ``wait`` seconds for the final result of ``run_id`` (see ``is_final``)."""
        deadline = time.monotonic() + wait
        async for result in self._read_results(job=job, namespace=namespace, deadline=deadline):
            if result.run_id == run_id and result.is_final:
                return result
        raise TimeoutError(f"no final result for run {run_id} within {wait:.0f}s")

    async def _read_results(
        self,
        *,
        job: str | None,
        namespace: str | None,
        idle: float | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[RunResult]:
        """Results of one Job from the start; stops after ``idle`` s of silence or ``deadline``."""
        subject = constants.results_subject(namespace or self.namespace, job or constants.ADHOC_JOB)
        sub = await self.js.pull_subscribe(
            subject,
            stream=constants.RESULTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                # A throwaway reader: the server deletes it soon after we stop fetching.
                inactive_threshold=5.0,
            ),
        )
        try:
            while True:
                wait = idle if idle is not None else 2.0
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return
                try:
                    msgs = await sub.fetch(100, timeout=max(wait, 0.05))
                except TimeoutError:
                    if idle is not None:
                        return
                    continue
                for msg in msgs:
                    try:
                        decoded = decode_results(msg.data)
                    except ValueError as error:
                        log.warning("skipping an undecodable result on %s: %s", msg.subject, error)
                        continue
                    for problem in decoded.errors:
                        log.warning("skipping a result on %s: %s", msg.subject, problem)
                    for result in decoded.results:
                        yield result
        finally:
            with contextlib.suppress(nats.errors.Error, ValueError):
                await sub.unsubscribe()


__all__ = ["KadenceClient", "QueueInfo", "new_run_id"]
