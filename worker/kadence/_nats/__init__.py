"""The one place Kadence uses nats-py below its public API.

What it is for: the few hot paths where nats-py's public API costs a measured share of the CPU
or latency, each kept here as a small function or a subclass so that a nats-py upgrade has one
module to check. ``tests/unit/test_nats_adapter.py`` pins what it relies on: the nats-py
versions in :data:`SUPPORTED` (also the range in ``pyproject.toml``), the signature of every
private method and the presence of every private attribute used here, and the behaviour against
a real nats-server. ``tests/unit/test_nats_private_names.py`` fails if a private nats-py name is
used anywhere else in ``worker/``, ``operator/`` or ``bench/``.

The uses, each with its reason and what was measured (docs/performance.md):

* :class:`DirectNATS` (``Client._process_msg``, ``Client._remove_sub``,
  ``Client._process_headers``, ``Client._build_message``, ``Subscription._id``): a
  subscription whose messages go straight to a plain function, in the read loop, instead of
  through nats-py's per-subscription queue, task and coroutine. Used by the worker for its pull
  inbox and its reply inbox (a run, a ``PubAck`` or a double ack's confirmation per message).
  Measured (§ (d), "Inbox messages go straight to their handler", ``eaffeab``): 3,073-3,772 runs/s
  (249-289 µs of CPU per run) before, 3,946-4,155 (227-237 µs) after. The operator measured no
  difference (§ (a), "the operator on ``DirectNATS``") and uses nats-py's plain client.
* :func:`write_now`, :func:`buffer` and :func:`writable` (``Client._transport``,
  ``Client._send_command``, ``Client._flush_pending``, ``Client._max_pending_size``): the write
  path of :class:`kadence.requests.Requests` for requests encoded ahead (the scheduler's staged
  bursts, the worker's batched double acks). Bytes are handed to the socket at once when
  nothing waits in nats-py's buffer, rather than to the flusher task, which runs only after
  every callback already queued in the event loop. Measured (§ (a), staged bursts, ``a1aeb6f``):
  1,000 Jobs due together, due → stored p50 / p99 17.1 / 58.0 ms with staging against
  43.0 / 230.9 ms without.
* :func:`mark_acked` (``Msg._ackd``): Kadence sends a message's double ack itself, through
  ``Requests`` (a few µs, no future or task per ack), so it records the ack where nats-py's own
  ``Msg.ack_sync`` would: nats-py has no public setter, and without it ``Msg.is_acked`` would be
  false and a second ack would not raise ``MsgAlreadyAckdError``.

What it is not for: convenience. Anything nats-py offers publicly (``publish``, ``subscribe``,
``pending_data_size``, ``is_connected``, ``stats``, ``Msg.is_acked``) is used through its public
name everywhere, this module included; a new private use needs a measurement that justifies it,
an entry above and a check in the contract test. Nothing outside :mod:`kadence` imports this
module but Kadence's own tests and benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = [
    "SUPPORTED",
    "DirectNATS",
    "buffer",
    "mark_acked",
    "subscribe_direct",
    "writable",
    "write_now",
]

#: The nats-py versions this module is tested against (a PEP 440 specifier; the same range as
#: the ``nats-py`` requirement in pyproject.toml). Widen it only after the contract test passed.
SUPPORTED = ">=2.16,<2.17"

log = logging.getLogger("kadence.client")


class DirectNATS(NATS):
    """nats-py's client, plus subscriptions whose messages go straight to a plain function.

    nats-py puts each message of a subscription in a queue that a task of the subscription
    drains into an async callback: per message a queue put and get, a task step and a
    coroutine. On the worker's pull inbox and reply inbox, where a message is a run, a
    ``PubAck`` or an ack's confirmation, that is a sizeable share of the CPU per run.
    :meth:`subscribe_direct` subscribes the usual way (so a reconnect subscribes it again and
    a drain ends it) and :meth:`_process_msg`, the client's step per incoming message, calls
    its function at once, in the read loop: it must be quick and never block. Headers are
    parsed by nats-py's own parser.
    """

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Callable[[Msg], None]] = {}

    async def subscribe_direct(self, subject: str, cb: Callable[[Msg], None]) -> Subscription:
        sub = await self.subscribe(subject, cb=_unused_callback)
        self._direct[sub._id] = cb
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        cb = self._direct.get(sid)
        if cb is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers) if headers else None
        try:
            cb(self._build_message(sid, subject, reply, data, hdr))
        except Exception:  # never out of the read loop: that would end the connection
            log.exception("handling a message on %s failed", subject.decode(errors="replace"))


async def _unused_callback(msg: Msg) -> None:
    """A direct subscription's nats-py callback: never called (see :class:`DirectNATS`)."""


async def subscribe_direct(nc: NATS, subject: str, cb: Callable[[Msg], None]) -> Subscription:
    """Subscribe ``cb`` (a plain function) to ``subject``: directly on a :class:`DirectNATS`
    connection, through an ordinary async callback (public API only) on any other."""
    if isinstance(nc, DirectNATS):
        return await nc.subscribe_direct(subject, cb)

    async def relay(msg: Msg) -> None:
        cb(msg)

    return await nc.subscribe(subject, cb=relay)


def writable(nc: NATS, size: int) -> bool:
    """Whether ``size`` more bytes can be sent or buffered now, as nats-py's ``publish`` decides:
    while disconnected only if buffering is on and the buffer has room."""
    if nc.is_connected:
        return True
    limit = nc._max_pending_size
    return limit > 0 and size + nc.pending_data_size <= limit


def write_now(nc: NATS, data: bytes) -> bool:
    """Hand ``data`` (whole protocol commands) to the socket if nothing waits in nats-py's buffer
    before it; False (nothing done) otherwise, and then :func:`buffer` it.

    Rather than to the flusher task, which runs only after every callback already queued in the
    event loop (for a burst due at an instant, that can be many milliseconds). The order of
    everything sent is kept; the flusher's next drain covers these too. Does not count
    ``nc.stats``: the caller does.
    """
    transport = nc._transport
    if nc.is_connected and nc.pending_data_size == 0 and transport is not None:
        transport.write(data)
        return True
    return False


async def buffer(nc: NATS, data: bytes) -> None:
    """nats-py's own publish path for ``data`` (whole protocol commands, encoded already): into
    its buffer, then a kick of its flusher. Raises what nats-py's ``publish`` would."""
    await nc._send_command(data)
    await nc._flush_pending()


def mark_acked(msg: Msg) -> None:
    """Record that ``msg`` is acknowledged, as nats-py's ``Msg.ack_sync`` does, for an ack
    Kadence sent and saw confirmed itself: ``msg.is_acked`` is then true, and nats-py's ack
    methods raise ``MsgAlreadyAckdError``."""
    msg._ackd = True
