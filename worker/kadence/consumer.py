"""Reading a Queue: JetStream's pull protocol, the messages it delivers, and a background consumer.

:class:`Pull` asks one durable partition consumer for messages and hands each on as it arrives
(the worker runtime's fetch loops are built on it). :class:`QueueMessage` wraps a delivered
message with its acknowledgements. :class:`QueueConsumer` is what
:meth:`KadenceClient.consume <kadence.client.KadenceClient.consume>` returns: it fetches from a
Queue's partitions in the background and yields :class:`QueueMessage` values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from kadence import constants
from kadence._nats import mark_acked, subscribe_direct
from kadence.requests import Requests
from kadence.slots import Slots

#: The client's logger (as :mod:`kadence._nats`): failed fetches are logged here.
log = logging.getLogger("kadence.client")

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
    """Reads a Queue's partitions in the background; see :meth:`KadenceClient.consume
    <kadence.client.KadenceClient.consume>`.

    ``partitions`` is called once, at the first ``anext()``, for the partitions to read;
    acknowledgements that wait for the server (``ack_sync``) go through ``requests``.
    """

    def __init__(
        self,
        js: JetStreamContext,
        requests: Requests,
        *,
        stream: str,
        partitions: Callable[[], Awaitable[Sequence[int]]],
        batch: int,
        fetch_timeout: float,
    ) -> None:
        self.js = js
        self.requests = requests
        self.stream = stream
        self._partitions = partitions
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
        for partition in await self._partitions():
            sub = await self.js.pull_subscribe_bind(
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
        return QueueMessage(msg, self.requests)

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
