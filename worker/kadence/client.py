"""The JetStream side of Kadence: stream set-up, publishing, consuming and ad-hoc runs.

:class:`KadenceClient` is what applications use to put work on a Queue (``publish``, ``enqueue``)
and to read it (``consume``); the worker runtime is built on it too. The ``ensure_*`` functions
create or update the streams and consumers of a Queue, the dead-letter stream and the results
stream. In production the operator calls them (it may import :mod:`kadence`); tests and ad-hoc
set-ups call them directly. They are idempotent: calling them again with new settings updates the
stream and consumers in place.

Names come from :mod:`kadence.constants`: a Queue ``ns/q`` is the work-queue stream
``KADENCE_ns_q`` with subjects ``kadence.ns.q.<partition>`` and one durable pull consumer
``partition-<n>`` per partition, shared by all workers of the Queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from kadence import constants
from kadence._nats import DirectNATS, buffer, mark_acked, subscribe_direct, writable, write_now
from kadence.config import Settings, nats_event_callbacks
from kadence.partitioning import partition_for
from kadence.protocol import (
    ConcurrencyPolicy,
    DeadLetterReason,
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

log = logging.getLogger("kadence.client")

#: How long a learned partition count / ack wait is trusted before asking the server again.
_QUEUE_INFO_TTL = 30.0
_PARTITION_CONSUMER = re.compile(r"partition-(\d+)")
#: Header values are single lines; long errors are cut to keep messages small.
_MAX_HEADER_VALUE = 2048


# ------------------------------------------------------------------------------------------------
# Streams and consumers
# ------------------------------------------------------------------------------------------------


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
    duplicate_window: float = 120.0,
    max_age: float | None = None,
    max_msgs: int | None = None,
    max_bytes: int | None = None,
    discard: Literal["old", "new"] = "old",
    memory: bool = False,
) -> StreamInfo:
    """Create or update the work stream of Queue ``namespace/queue`` and its partition consumers.

    The stream has work-queue retention (a message is gone once acknowledged), subjects
    ``kadence.<ns>.<q>.*``, a de-duplication window for ``Nats-Msg-Id`` (the run id), and the
    partition count in its metadata. Each partition gets a durable pull consumer with explicit
    acks filtered to its subject. Consumers of partitions beyond ``partitions`` are left alone:
    they may still hold messages (removing them is the operator's decision).

    ``backoff`` (seconds) are JetStream's redelivery delays; the server then uses ``backoff[0]``
    as the ack wait, and it must have fewer entries than ``max_deliver``.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if backoff and len(backoff) >= max_deliver:
        raise ValueError("backoff must have fewer entries than max_deliver")
    stream = constants.stream_name(namespace, queue)
    info = await _ensure_stream(
        js,
        StreamConfig(
            name=stream,
            description=f"Kadence Queue {namespace}/{queue}",
            subjects=[constants.subjects_wildcard(namespace, queue)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.MEMORY if memory else StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window,
            max_age=max_age,
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            discard=DiscardPolicy(discard),
            metadata={constants.PARTITIONS_METADATA_KEY: str(partitions)},
        ),
    )
    for partition in range(partitions):
        name = constants.consumer_name(partition)
        await js.add_consumer(
            stream,
            ConsumerConfig(
                name=name,
                durable_name=name,
                description=f"partition {partition} of Kadence Queue {namespace}/{queue}",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                backoff=list(backoff) or None,
                max_ack_pending=max_ack_pending,
                filter_subject=constants.subject(namespace, queue, partition),
                num_replicas=replicas,
            ),
        )
    return info


async def ensure_dlq_stream(
    js: JetStreamContext,
    *,
    namespace: str,
    queue: str,
    replicas: int = 1,
    max_age: float | None = None,
    duplicate_window: float = 120.0,
) -> StreamInfo:
    """Create or update the dead-letter stream of a Queue (limits retention, kept for replay)."""
    return await _ensure_stream(
        js,
        StreamConfig(
            name=constants.dlq_stream_name(namespace, queue),
            description=f"dead letters of Kadence Queue {namespace}/{queue}",
            subjects=[constants.dlq_subject(namespace, queue)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age,
            duplicate_window=duplicate_window,
        ),
    )


async def ensure_results_stream(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    max_age: float | None = 7 * 24 * 3600.0,
    duplicate_window: float = 120.0,
) -> StreamInfo:
    """Create or update the stream of run results (``kadence-results.>``, limits retention).

    The de-duplication window drops repeated reports (``Nats-Msg-Id`` = ``runId:attempt:state``).
    """
    return await _ensure_stream(
        js,
        StreamConfig(
            name=constants.RESULTS_STREAM,
            description="Kadence run results",
            subjects=[constants.RESULTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age,
            duplicate_window=duplicate_window,
        ),
    )


def partition_consumers(names: Sequence[str]) -> list[int]:
    """The partition numbers of the ``partition-<n>`` consumers among ``names``, sorted."""
    return sorted(int(m.group(1)) for n in names if (m := _PARTITION_CONSUMER.fullmatch(n)))


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


def dlq_headers(
    *,
    reason: DeadLetterReason | str,
    subject: str,
    deliveries: int,
    error: str,
    stream: str,
    stream_sequence: int,
    original: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of a dead-lettered copy: why, from where, after how many deliveries.

    ``Nats-Msg-Id`` is the original stream and sequence, so copying the same message twice (a
    worker that crashed between copying and terminating it) keeps one copy.
    """
    headers = {k: v for k, v in (original or {}).items() if not k.lower().startswith("nats-")}
    headers.update(
        {
            constants.DLQ_REASON_HEADER: str(reason),
            constants.DLQ_SUBJECT_HEADER: subject,
            constants.DLQ_DELIVERIES_HEADER: str(deliveries),
            constants.DLQ_ERROR_HEADER: header_value(error),
            constants.DLQ_STREAM_SEQ_HEADER: str(stream_sequence),
            constants.MSG_ID_HEADER: f"dlq:{stream}:{stream_sequence}",
        }
    )
    return headers


def header_value(text: str) -> str:
    """``text`` as a safe NATS header value: one line, bounded length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_HEADER_VALUE else flat[: _MAX_HEADER_VALUE - 3] + "..."


def new_run_id() -> str:
    """A fresh id for an ad-hoc run."""
    return f"adhoc-{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------------
# Fetch slots
# ------------------------------------------------------------------------------------------------


class Slots:
    """A counting semaphore that hands out several permits at once, first come first served.

    Fetch loops take as many permits as there are free slots (at least one) and fetch that many
    messages, so a worker never holds more messages than it can run. A released permit goes to
    the longest waiter first, so one partition cannot starve the others.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.free = capacity
        self.closed = False
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def in_use(self) -> int:
        return self.capacity - self.free

    async def take(self, most: int = 1) -> int:
        """Wait for at least one permit; take up to ``most``. 0 once closed."""
        if self.closed:
            return 0
        if self.free > 0 and not self.waiting:
            got = min(most, self.free)
            self.free -= got
            return got
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            got = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() > 0:
                self.give(future.result())  # handed a permit just as we were cancelled
            raise
        if got == 0:
            return 0
        extra = max(0, min(most - got, self.free))
        self.free -= extra
        return got + extra

    def give(self, count: int = 1) -> None:
        self.free += count
        while self.free > 0 and self._waiters:
            future = self._waiters.popleft()
            if future.done():
                continue
            self.free -= 1
            future.set_result(1)

    def close(self) -> None:
        """Wake every waiter with 0 permits; later ``take`` calls return 0."""
        self.closed = True
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(0)


# ------------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------------


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


#: How often :class:`Requests` looks for requests past their timeout (seconds).
SWEEP_INTERVAL = 0.25


class Requests:
    """Requests over one connection, each awaited without a task or a ``wait_for`` of its own.

    nats-py's ``request`` and ``JetStreamContext.publish`` cost about 100 µs of CPU per message
    (a fresh inbox token, a ``wait_for`` wrapper, the reply parsed into a dataclass). The hot
    paths (the operator's run dispatch, the worker's reports and double acks) use this instead:
    replies arrive on one wildcard inbox subscription, each waiter is a plain future, and one
    sweep every :data:`SWEEP_INTERVAL` seconds (while requests are waiting) fails those past
    their deadline, so a timeout fires up to that much late. A timer per request would cost a
    push into the event loop's heap each. Same errors as nats-py: ``nats.errors.TimeoutError``,
    ``NoRespondersError`` (``NoStreamResponseError`` for :meth:`publish`) and
    ``nats.js.errors.APIError``.
    """

    def __init__(self, nc: NATS, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._started: asyncio.Future[None] | None = None
        #: Reply token -> (its future, or the callback of :meth:`send_now`; its deadline).
        self._waiting: dict[str, tuple[asyncio.Future[Msg] | ReplyCallback, float]] = {}
        self._tokens = itertools.count()
        self._sweeper: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def _start(self) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                prefix = self._nc.new_inbox() + "."
                await subscribe_direct(self._nc, prefix + "*", self._reply)
                self._prefix = prefix
                self._started.set_result(None)
            except BaseException as error:
                self._started.set_exception(error)
                self._started = None
                raise
        await self._started

    def _reply(self, msg: Msg) -> None:
        found = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if found is not None:
            if isinstance(found[0], _Reply):
                found[0].read_at = time.monotonic()
            _end(found[0], msg, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = [token for token, (_, deadline) in self._waiting.items() if deadline <= now]
        for token in expired:
            _end(self._waiting.pop(token)[0], None, nats.errors.TimeoutError())
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep) if self._waiting else None

    def _fail(self, tokens: Sequence[str], error: BaseException) -> None:
        """End the waits of ``tokens`` with ``error``."""
        for token in tokens:
            found = self._waiting.pop(token, None)
            if found is not None:
                _end(found[0], None, error)

    def _waiter(self, timeout: float | None) -> tuple[str, asyncio.Future[Msg]]:
        """A reply token and its future, failed by the sweep once ``timeout`` has passed."""
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Msg] = _Reply(loop=loop)
        self._waiting[token] = (waiter, loop.time() + (timeout or self._timeout))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        return token, waiter

    async def _send(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        timeout: float | None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> tuple[str, asyncio.Future[Msg]]:
        if not self._prefix:
            await self._start()
        token, waiter = self._waiter(timeout)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._waiting.pop(token, None)
            raise
        return token, waiter

    async def ready(self) -> None:
        """Subscribe the reply inbox now (done by the first request otherwise): needed before
        :meth:`prepare`, which does not wait."""
        if not self._prefix:
            await self._start()

    def prepare(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Prepared:
        """Encode a request now, to be sent later by :meth:`write` (or given up by :meth:`discard`).

        For a burst of requests due at one instant (the scheduler's fires at ``:00``): the work
        per request (its reply token and waiter, the protocol line) is done before the instant,
        and at the instant :meth:`write` hands all of them to the connection in one piece. The
        reply waiter is registered at once; its timeout counts from here.
        """
        if not self._prefix:
            raise RuntimeError("Requests.prepare before Requests.ready")
        if _SUBJECT_UNSAFE.search(subject):
            raise nats.errors.BadSubjectError
        token, waiter = self._waiter(timeout)
        wire = _wire(subject, self._prefix + token, payload, headers)
        return Prepared(token=token, wire=wire, reply=waiter)

    @property
    def pending(self) -> int:
        """Requests sent or prepared whose reply has not come yet."""
        return len(self._waiting)

    def discard(self, prepared: Prepared) -> None:
        """Give up a prepared request that will not be written."""
        self._waiting.pop(prepared.token, None)
        prepared.reply.cancel()

    async def write(self, prepared: Sequence[Prepared]) -> None:
        """Send prepared requests, in order, in one piece.

        The bytes are those nats-py's ``publish`` would send (``HPUB``/``PUB`` with the reply
        inbox). When nothing waits in nats-py's buffer they go straight to the socket;
        otherwise (and while reconnecting) they join that buffer and its flusher, like any
        publish. On an error none of them was sent and their waiters are discarded.
        """
        try:
            if not prepared:
                self._check_open()
                return
            data = b"".join(p.wire for p in prepared)
            self._check_writable(len(data))
        except BaseException:
            for p in prepared:
                self.discard(p)
            raise
        if not self._write_now(data, len(prepared)):
            await self._buffer(data)

    def send_now(
        self,
        requests: Sequence[tuple[str, bytes, ReplyCallback]],
        *,
        timeout: float | None = None,
    ) -> None:
        """Send requests without headers now, in one piece; each reply goes to its callback.

        For replies nobody awaits (the worker's double acks, sent together once their runs'
        results are stored): no future, task or coroutine per request. A callback gets
        ``(reply, None)``, or ``(None, error)`` once ``timeout`` has passed (nats-py's
        ``TimeoutError``) or when the requests could not be sent; it is never called from
        within this method. Needs :meth:`ready` first.
        """
        if not self._prefix:
            raise RuntimeError("Requests.send_now before Requests.ready")
        if not requests:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self._timeout)
        tokens: list[str] = []
        parts: list[bytes] = []
        for subject, payload, callback in requests:
            if _SUBJECT_UNSAFE.search(subject):
                loop.call_soon(_call, callback, None, nats.errors.BadSubjectError())
                continue
            token = str(next(self._tokens))
            self._waiting[token] = (callback, deadline)
            tokens.append(token)
            parts.append(_wire(subject, self._prefix + token, payload))
        if not tokens:
            return
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        data = b"".join(parts)
        try:
            self._check_writable(len(data))
        except nats.errors.Error as error:
            loop.call_soon(self._fail, tokens, error)
            return
        if self._write_now(data, len(tokens)):
            return
        task = loop.create_task(self._buffer(data, tokens))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _check_open(self) -> None:
        if self._nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if self._nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError

    def _check_writable(self, size: int) -> None:
        """Raise nats-py's error if ``size`` bytes cannot be sent or buffered now."""
        self._check_open()
        if not writable(self._nc, size):
            raise nats.errors.OutboundBufferLimitError

    def _write_now(self, data: bytes, count: int) -> bool:
        """Hand ``data`` (``count`` messages) to the socket if nothing waits before it."""
        stats = self._nc.stats
        stats["out_msgs"] += count
        stats["out_bytes"] += len(data)
        # Straight to the socket rather than to nats-py's flusher task (kadence._nats.write_now).
        return write_now(self._nc, data)

    async def _buffer(self, data: bytes, tokens: Sequence[str] = ()) -> None:
        """nats-py's own publish path, minus the per-message encoding done already."""
        try:
            await buffer(self._nc, data)
        except nats.errors.Error as error:
            if not tokens:
                raise
            self._fail(tokens, error)

    async def send(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> asyncio.Future[Msg]:
        """Send a request and return the future of its reply without waiting for it.

        For callers that send many requests in one go and handle each reply in a callback
        (the scheduler's fires): no task and no await per request. The future fails with
        ``nats.errors.TimeoutError`` after ``timeout``; pass its reply to :func:`pub_ack` for a
        JetStream publish.
        """
        return (await self._send(subject, payload, headers, timeout))[1]

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> Msg:
        """Send ``payload`` to ``subject`` and return the first reply."""
        msg = await self._await_reply(subject, payload, headers, timeout)
        if msg.headers and msg.headers.get("Status") == "503":
            raise nats.errors.NoRespondersError
        return msg

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        stream: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> PubAck:
        """Publish to JetStream and wait for the stream's acknowledgement (its ``PubAck``)."""
        if stream is not None:
            headers = {**(headers or {}), "Nats-Expected-Stream": stream}
        return pub_ack(await self._await_reply(subject, payload, headers, timeout))

    async def _await_reply(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        timeout: float | None,  # noqa: ASYNC109 -- the NATS request timeout
    ) -> Msg:
        token, waiter = await self._send(subject, payload, headers, timeout)
        try:
            return await waiter
        finally:
            self._waiting.pop(token, None)


#: Characters a subject may not contain on the wire (they would end the protocol line).
_SUBJECT_UNSAFE = re.compile(r"[ \t\r\n]")
#: A header name: an RFC 9110 token, as nats-py requires.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """NATS message headers as nats-py encodes them (``NATS/1.0`` and one line each)."""
    lines = ["NATS/1.0\r\n"]
    for k, v in headers.items():
        key = k.strip()
        if not key:
            continue
        if not _HEADER_KEY.fullmatch(key):
            raise nats.errors.BadHeaderError(key)
        value = v.strip().replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def _wire(
    subject: str, reply: str, payload: bytes, headers: Mapping[str, str] | None = None
) -> bytes:
    """The bytes nats-py's ``publish`` sends for a request: ``HPUB`` with headers, ``PUB``
    without (the subject is checked by the caller)."""
    if headers:
        head = encode_headers(headers)
        line = f"HPUB {subject} {reply} {len(head)} {len(head) + len(payload)}\r\n"
        return b"".join((line.encode(), head, payload, b"\r\n"))
    return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, b"\r\n"))


#: The callback of a request sent by :meth:`Requests.send_now`: ``(reply, None)`` or
#: ``(None, error)``.
ReplyCallback = Callable[[Msg | None, BaseException | None], None]


class _Reply(asyncio.Future[Msg]):
    """A request's reply future that also knows when the reply was taken off the connection."""

    read_at: float | None = None


def replied_at(reply: asyncio.Future[Msg]) -> float | None:
    """When the reply that resolved ``reply`` was taken off the connection (:func:`time.monotonic`;
    on a :class:`~kadence._nats.DirectNATS` by the read loop, on nats-py's plain client by the
    reply subscription's task), for a future of :class:`Requests`; None otherwise or while there
    is none. A done callback runs a loop turn or more later, after whatever else the turn holds:
    under load, milliseconds."""
    return reply.read_at if isinstance(reply, _Reply) else None


def _call(callback: ReplyCallback, reply: Msg | None, error: BaseException | None) -> None:
    try:
        callback(reply, error)
    except Exception:  # a bug in the callback: it must not stop the read loop or the sweep
        log.exception("a reply callback failed")


def _end(
    waiter: asyncio.Future[Msg] | ReplyCallback, reply: Msg | None, error: BaseException | None
) -> None:
    """Hand a request's reply (or the error that ended its wait) to its future or callback."""
    if not isinstance(waiter, asyncio.Future):
        _call(waiter, reply, error)
    elif waiter.done():
        return
    elif error is not None or reply is None:
        waiter.set_exception(error or nats.errors.TimeoutError())
    else:
        waiter.set_result(reply)


@dataclass(slots=True)
class Prepared:
    """A request encoded by :meth:`Requests.prepare`, not sent yet."""

    token: str
    #: The protocol bytes (``HPUB``/``PUB`` line, headers, payload).
    wire: bytes
    #: The reply's future (see :meth:`Requests.send`).
    reply: asyncio.Future[Msg]


def pub_ack(msg: Msg) -> PubAck:
    """The ``PubAck`` in JetStream's reply to a publish, or the error it reports.

    Raises ``NoStreamResponseError`` when no stream took the subject (no responders) and
    ``nats.js.errors.APIError`` for an error reply.
    """
    if msg.headers and msg.headers.get("Status") == "503":
        raise nats.js.errors.NoStreamResponseError
    reply = json.loads(msg.data)
    if "error" in reply:
        raise nats.js.errors.APIError.from_error(reply["error"])
    return PubAck(
        stream=reply["stream"],
        seq=reply["seq"],
        domain=reply.get("domain"),
        duplicate=reply.get("duplicate"),
    )


_MAX_REQUEST_BATCH = re.compile(r"MaxRequestBatch of (\d+)", re.IGNORECASE)

#: Seconds past a pull request's expiry after which its end (a ``408`` status) is given up on:
#: the server lost the request (a reconnect or a restart), and the worker asks again.
PULL_GRACE = 2.0


class Pull:
    """One durable pull consumer, pulled one request at a time; each message is handed on at once.

    The JetStream pull protocol on a core subscription: :meth:`pull` asks for up to ``batch``
    messages (``$JS.API.CONSUMER.MSG.NEXT``), passes each to ``deliver`` the moment it arrives, and
    returns how many came once the request is over — all delivered, expired (status 408), or
    ended by the server (409). nats-py's ``PullSubscription.fetch`` instead returns the batch as a
    list and waits for each message with a ``wait_for`` task of its own, which costs a worker
    draining short tasks a large share of its CPU per message. A message that arrives when no
    request wants it (left from a request given up on) goes to ``extra``, which puts it back.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        stream: str,
        consumer: str,
        deliver: Callable[[Msg], None],
        extra: Callable[[Msg], None],
    ) -> None:
        self._nc = nc
        self.stream = stream
        self.consumer = consumer
        self._deliver = deliver
        self._extra = extra
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Any = None
        self._wanted = 0
        #: Messages delivered by the current (or last) request.
        self.got = 0
        #: Why the server ended the last request early (a 409's description), if it did and
        #: asking again at once would not help.
        self.conflict = ""
        #: The consumer's MaxRequestBatch, once the server has refused a larger request.
        self.max_batch: int | None = None
        self._over: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await subscribe_direct(self._nc, self._inbox, self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None

    async def pull(self, batch: int, *, expires: float) -> int:
        """Ask for up to ``batch`` messages for ``expires`` seconds; the number delivered.

        Raises ``nats.js.errors.NotFoundError`` when the consumer is gone and
        ``nats.js.errors.APIError`` for other errors the server answers with.
        """
        loop = asyncio.get_running_loop()
        over = self._over = loop.create_future()
        self._wanted, self.got, self.conflict = batch, 0, ""
        request = {"batch": batch, "expires": int(expires * 1e9)}
        try:
            await self._nc.publish(self._api, json.dumps(request).encode(), reply=self._inbox)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over, expires + PULL_GRACE)
            return self.got
        finally:
            # Whatever happens now (given up on, cancelled, over), later messages are extras.
            self._wanted = self.got
            self._over = None

    def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if self.got < self._wanted:
                self.got += 1
                self._deliver(msg)
                if self.got == self._wanted:
                    self._end()
            else:
                self._extra(msg)
        elif status == "100":  # idle heartbeat
            return
        elif status in ("404", "408"):  # no messages / the request expired
            self._end()
        elif status == "409":
            description = (msg.headers or {}).get("Description", "")
            if "consumer deleted" in description.lower():
                self._end(nats.js.errors.NotFoundError(description=description))
            elif match := _MAX_REQUEST_BATCH.search(description):
                self.max_batch = max(1, int(match.group(1)))  # ask again within the limit
                self._end()
            else:  # leadership change, server shutdown, other limits: ask again, not at once
                self.conflict = description or "409"
                self._end()
        elif status == "503":
            self._end(nats.errors.NoRespondersError())
        else:
            self._end(nats.js.errors.APIError.from_msg(msg))

    def _end(self, error: BaseException | None = None) -> None:
        over = self._over
        if over is not None and not over.done():
            if error is None:
                over.set_result(None)
            else:
                over.set_exception(error)


class QueueMessage:
    """A message consumed from a Queue partition, with its acknowledgement methods."""

    def __init__(self, msg: Msg, requests: Requests | None = None) -> None:
        self.msg = msg
        self._requests = requests

    def __repr__(self) -> str:
        return f"QueueMessage(subject={self.subject!r}, deliveries={self.num_delivered})"

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})

    @property
    def partition(self) -> int | None:
        return constants.partition_of_subject(self.msg.subject)

    @property
    def num_delivered(self) -> int:
        # Read straight from the ack subject (read once per run; nats-py's metadata parses all
        # of it): $JS.ACK.<stream>.<consumer>.<delivered>.… (9 tokens) or, with a domain and
        # an account hash, $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.… (11+).
        tokens = (self.msg.reply or "").split(".")
        if len(tokens) == 9 and tokens[1] == "ACK":
            return int(tokens[4])
        if len(tokens) >= 11 and tokens[1] == "ACK":
            return int(tokens[6])
        return int(self.msg.metadata.num_delivered)

    @property
    def stream(self) -> str:
        return str(self.msg.metadata.stream)

    @property
    def stream_sequence(self) -> int:
        return int(self.msg.metadata.sequence.stream)

    def json(self) -> Any:
        return json.loads(self.msg.data)

    async def ack(self) -> None:
        await self.msg.ack()

    async def ack_sync(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- NATS request timeout
        """Ack and wait for the server to confirm it (a "double ack")."""
        if self._requests is None:
            await self.msg.ack_sync(timeout=timeout)
            return
        if not self.msg.reply:
            raise nats.errors.NotJSMessageError
        if self.msg.is_acked:
            raise nats.errors.MsgAlreadyAckdError(self.msg)
        await self._requests.request(self.msg.reply, b"", timeout=timeout)  # b"": +ACK
        mark_acked(self.msg)  # what nats-py's own ack_sync records

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver, after ``delay`` seconds if given."""
        await self.msg.nak(delay=delay)

    async def term(self) -> None:
        """Never redeliver."""
        await self.msg.term()

    async def in_progress(self) -> None:
        """Reset the ack wait: still working on it."""
        await self.msg.in_progress()


class QueueConsumer:
    """Reads a Queue's partitions in the background; see :meth:`KadenceClient.consume`."""

    def __init__(
        self,
        client: KadenceClient,
        queue: str,
        *,
        partitions: Sequence[int] | None,
        batch: int,
        fetch_timeout: float,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stream = constants.stream_name(client.namespace, queue)
        self._partitions = list(partitions) if partitions is not None else None
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        # Credits bound the messages fetched but not yet taken; a fetch that returns more than
        # asked (leftovers of an earlier timed-out pull) drives them below zero for a while.
        self._credits = Slots(batch)
        self._buffer: asyncio.Queue[Msg] = asyncio.Queue()
        self._subs: list[JetStreamContext.PullSubscription] = []
        self._fetchers: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False

    async def _start(self) -> None:
        self._started = True
        parts = self._partitions
        if parts is None:
            parts = (await self.client.queue_info(self.queue)).partitions
        for partition in parts:
            sub = await self.client.js.pull_subscribe_bind(
                consumer=constants.consumer_name(partition), stream=self.stream
            )
            self._subs.append(sub)
            self._fetchers.append(asyncio.create_task(self._fetch(sub)))

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            wanted = await self._credits.take(self._batch)
            if wanted == 0:
                return
            try:
                msgs = await sub.fetch(wanted, timeout=self._fetch_timeout)
            except TimeoutError:
                msgs = []
            except nats.errors.Error as error:
                log.warning("fetch from %s failed: %s", self.stream, error)
                msgs = []
                await asyncio.sleep(1.0)
            self._credits.give(wanted - len(msgs))
            for msg in msgs:
                self._buffer.put_nowait(msg)

    def __aiter__(self) -> QueueConsumer:
        return self

    async def __anext__(self) -> QueueMessage:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        msg = await self._buffer.get()
        self._credits.give(1)
        return QueueMessage(msg, self.client.requests)

    async def aclose(self) -> None:
        """Stop fetching, put back what was fetched but not taken, unsubscribe.

        A fetch in flight is let run to its end (at most ``fetch_timeout``) rather than
        cancelled: its pull request would stay open on the server, and a message put back
        meanwhile would be delivered to it -- to nobody -- and wait the whole ack wait.
        """
        if self._closed:
            return
        self._closed = True
        self._credits.close()
        if self._fetchers:
            _, stuck = await asyncio.wait(self._fetchers, timeout=self._fetch_timeout + 2)
            for task in stuck:
                task.cancel()
        await asyncio.gather(*self._fetchers, return_exceptions=True)
        while not self._buffer.empty():
            leftover = self._buffer.get_nowait()
            with contextlib.suppress(nats.errors.Error):
                await leftover.nak()
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error, ValueError):
                await sub.unsubscribe()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class KadenceClient:
    """Publish to and consume from Kadence Queues of one namespace over NATS JetStream."""

    def __init__(
        self, nc: NATS, *, namespace: str = "default", settings: Settings | None = None
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        #: Publishes and double acks on the hot paths (see :class:`Requests`).
        self.requests = Requests(nc)
        self.namespace = namespace
        self.settings = settings
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
        return cls(nc, namespace=namespace or settings.namespace, settings=settings)

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
        return QueueConsumer(
            self, queue, partitions=partitions, batch=batch, fetch_timeout=fetch_timeout
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
