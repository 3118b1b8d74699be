"""Many NATS requests over one connection, cheaply: JetStream publishes, double acks, staged bursts.

:class:`Requests` sends requests whose replies all come back on one wildcard inbox subscription,
each awaited by a plain future (or handed to a callback) and timed out by one periodic sweep. The
SDK client publishes through it, the worker sends its reports and double acks with it, and the
operator's scheduler encodes a burst of run requests ahead of its instant (:meth:`Requests.prepare`,
:class:`Prepared`) and writes them in one piece. :func:`pub_ack` reads JetStream's reply to a
publish; :func:`replied_at` tells when a reply was taken off the connection; :func:`encode_headers`
writes NATS headers as nats-py does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck

from kadence._nats import buffer, subscribe_direct, writable, write_now

#: The client's logger (as :mod:`kadence._nats`): reply callbacks that fail are logged here.
log = logging.getLogger("kadence.client")

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
