"""The contract of :mod:`kadence._nats`, the one place Kadence uses nats-py below its public API.

What the adapter relies on, pinned: the installed nats-py is in the range it supports (and
pyproject.toml asks for that range), every private method it calls or overrides has the
signature it expects, every private attribute it reads or writes exists; and, against a real
nats-server, what it does with them works. A nats-py upgrade that fails here needs the adapter
looked at (and :data:`kadence._nats.SUPPORTED` widened) before it is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from kadence import _nats
from kadence._nats import DirectNATS, buffer, mark_acked, subscribe_direct, writable, write_now
from kadence_devstack.nats import NatsServer

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# Versions
# ------------------------------------------------------------------------------------------------


def test_the_installed_nats_py_is_a_supported_version() -> None:
    installed = importlib.metadata.version("nats-py")
    assert SpecifierSet(_nats.SUPPORTED).contains(installed, prereleases=True), (
        f"nats-py {installed} is outside kadence._nats.SUPPORTED ({_nats.SUPPORTED}): check the "
        "adapter against it, then widen the range here and in pyproject.toml"
    )


def test_pyproject_asks_for_the_supported_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"] if r.startswith("nats-py")]
    assert len(found) == 1
    assert found[0].specifier == SpecifierSet(_nats.SUPPORTED)


# ------------------------------------------------------------------------------------------------
# The private names, as the adapter uses them
# ------------------------------------------------------------------------------------------------

EMPTY = inspect.Parameter.empty

#: Private methods of nats-py's client the adapter calls or overrides: (parameters after
#: ``self``, with their defaults where the adapter relies on one; whether it is a coroutine).
CLIENT_METHODS: dict[str, tuple[list[tuple[str, object]], bool]] = {
    # overridden by DirectNATS; nats-py's parser calls it with these five, positionally
    "_process_msg": (
        [(name, EMPTY) for name in ("sid", "subject", "reply", "data", "headers")],
        True,
    ),
    # overridden by DirectNATS; Subscription.unsubscribe calls it
    "_remove_sub": ([("sid", EMPTY), ("max_msgs", 0)], False),
    # called by DirectNATS._process_msg
    "_process_headers": ([("headers", EMPTY)], True),
    "_build_message": (
        [(name, EMPTY) for name in ("sid", "subject", "reply", "data", "headers")],
        False,
    ),
    # called by buffer(nc, data)
    "_send_command": ([("cmd", EMPTY), ("priority", False)], True),
    "_flush_pending": ([("force_flush", False)], True),
}


@pytest.mark.parametrize("name", sorted(CLIENT_METHODS))
def test_a_private_client_method_has_the_expected_signature(name: str) -> None:
    expected, coroutine = CLIENT_METHODS[name]
    method = getattr(NATS, name, None)
    assert method is not None, f"nats-py's Client has no {name} any more"
    params = list(inspect.signature(method).parameters.values())
    assert params[0].name == "self"
    assert [(p.name, p.default) for p in params[1:]] == expected
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    assert inspect.iscoroutinefunction(method) is coroutine


def test_directnats_overrides_with_the_same_signatures() -> None:
    for name in ("_process_msg", "_remove_sub"):
        ours = inspect.signature(getattr(DirectNATS, name)).parameters
        theirs = inspect.signature(getattr(NATS, name)).parameters
        assert list(ours) == list(theirs), name
        assert [p.default for p in ours.values()] == [p.default for p in theirs.values()], name


def test_directnats_parses_headers_with_nats_py_s_own_parser() -> None:
    """The faster header parser DirectNATS once had is gone (issue 26)."""
    assert "_parse_header_lines" not in vars(DirectNATS)
    assert DirectNATS._parse_header_lines is NATS._parse_header_lines


def test_the_private_client_attributes_exist() -> None:
    """Read by write_now / writable; set up by the client's constructor (and connect)."""
    nc = NATS()
    assert nc._transport is None  # write_now: None until connected
    assert nc._max_pending_size == 0  # writable: set by connect's pending_size
    assert isinstance(type(nc).pending_data_size, property)  # public, but what write_now reads
    assert nc.pending_data_size == 0


def test_a_subscription_keeps_its_sid_in_id() -> None:
    """DirectNATS keys its functions by ``sub._id``, the sid _process_msg and _remove_sub get."""
    assert "id" in inspect.signature(Subscription.__init__).parameters
    assert Subscription(NATS(), id=42, subject="s")._id == 42


def test_a_message_records_its_ack_in_ackd() -> None:
    """mark_acked sets what nats-py's own acks set, so its checks see it."""
    msg = Msg(_client=NATS(), subject="s", reply="$JS.ACK.S.C.1.1.1.0.0")
    assert msg._ackd is False
    assert not msg.is_acked
    mark_acked(msg)
    assert msg.is_acked


async def test_a_marked_message_cannot_be_acked_again() -> None:
    msg = Msg(_client=NATS(), subject="s", reply="$JS.ACK.S.C.1.1.1.0.0")
    mark_acked(msg)
    for ack in (msg.ack, msg.ack_sync, msg.nak, msg.term):
        with pytest.raises(nats.errors.MsgAlreadyAckdError):
            await ack()


def test_a_client_never_connected_writes_nothing() -> None:
    nc = NATS()
    assert write_now(nc, b"PUB s 0\r\n\r\n") is False
    assert writable(nc, 1) is False  # not connected, no buffer before connect


# ------------------------------------------------------------------------------------------------
# Against a real nats-server
# ------------------------------------------------------------------------------------------------


async def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.integration
async def test_a_direct_subscription_gets_its_messages_until_unsubscribed(
    nats_server: NatsServer,
) -> None:
    nc = DirectNATS()
    await nc.connect(nats_server.url)
    try:
        got: list[tuple[str, str, dict[str, str] | None]] = []

        def seen(msg: Msg) -> None:
            got.append((msg.subject, msg.data.decode(), msg.headers))

        sub = await subscribe_direct(nc, "adapter.direct.>", seen)
        assert sub._id in nc._direct
        tasks = len(asyncio.all_tasks())
        await nc.publish("adapter.direct.a", b"1")
        await nc.publish("adapter.direct.b", b"2", headers={"K": "v", "Nats-Msg-Id": "x"})
        await _until(lambda: len(got) == 2, "the messages")
        assert got == [
            ("adapter.direct.a", "1", None),
            ("adapter.direct.b", "2", {"K": "v", "Nats-Msg-Id": "x"}),
        ]
        assert len(asyncio.all_tasks()) == tasks  # no task per message
        assert nc.stats["in_msgs"] >= 2

        await sub.unsubscribe()
        assert sub._id not in nc._direct  # _remove_sub is how nats-py removes a subscription
        await nc.publish("adapter.direct.a", b"gone")
        await nc.flush()
        await asyncio.sleep(0.1)
        assert len(got) == 2
    finally:
        await nc.close()


@pytest.mark.integration
async def test_subscribe_direct_on_a_plain_client_uses_public_subscriptions(
    nats_server: NatsServer,
) -> None:
    nc = NATS()
    await nc.connect(nats_server.url)
    try:
        got: list[bytes] = []
        sub = await subscribe_direct(nc, "adapter.plain", lambda msg: got.append(msg.data))
        await nc.publish("adapter.plain", b"p")
        await _until(lambda: got == [b"p"], "the message")
        await sub.unsubscribe()
    finally:
        await nc.close()


@pytest.mark.integration
async def test_written_and_buffered_bytes_arrive_in_order(nats_server: NatsServer) -> None:
    nc, receiver = NATS(), NATS()
    await nc.connect(nats_server.url)
    await receiver.connect(nats_server.url)
    try:
        got: list[bytes] = []

        async def seen(msg: Msg) -> None:
            got.append(msg.data)

        await receiver.subscribe("adapter.write", cb=seen)
        await receiver.flush()
        assert writable(nc, 1 << 20)

        await buffer(nc, b"PUB adapter.write 1\r\na\r\n")
        # nats-py's flusher has not run yet: writing now would overtake "a"
        assert nc.pending_data_size > 0
        assert write_now(nc, b"PUB adapter.write 1\r\nX\r\n") is False
        await buffer(nc, b"PUB adapter.write 1\r\nb\r\nPUB adapter.write 1\r\nc\r\n")
        await nc.flush()
        assert nc.pending_data_size == 0
        assert write_now(nc, b"PUB adapter.write 1\r\nd\r\n") is True
        await nc.publish("adapter.write", b"e")
        await _until(lambda: len(got) == 5, "the messages")
        assert got == [b"a", b"b", b"c", b"d", b"e"]
    finally:
        await nc.close()
        await receiver.close()


@pytest.mark.integration
async def test_a_disconnected_client_writes_nothing_and_buffers_within_its_limit(
    nats_server: NatsServer,
) -> None:
    """Closed is Requests' own check (public ``is_closed``); writable is only the buffer's room,
    as in nats-py's publish: ``pending_size`` from connect."""
    nc = NATS()
    await nc.connect(nats_server.url, pending_size=1000)
    await nc.close()
    assert write_now(nc, b"PUB adapter.closed 0\r\n\r\n") is False
    assert writable(nc, 1000)
    assert not writable(nc, 1001)


@pytest.mark.integration
async def test_a_marked_ack_is_not_sent_twice(nats_server: NatsServer) -> None:
    """Kadence double-acks a message itself and marks it; nats-py then refuses another ack."""
    nc = NATS()
    await nc.connect(nats_server.url)
    js = nc.jetstream()
    stream = f"ADAPTER_ACKS_{uuid.uuid4().hex[:8]}"
    try:
        subject = f"adapter.acks.{stream}"
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT)
        )
        await js.publish(subject, b"run")
        sub = await js.pull_subscribe_bind("c", stream=stream)
        (msg,) = await sub.fetch(1, timeout=5)
        await nc.request(msg.reply, b"", timeout=5)  # an empty request is a double ack
        mark_acked(msg)
        assert msg.is_acked
        with pytest.raises(nats.errors.MsgAlreadyAckdError):
            await msg.ack_sync()
        info = await js.consumer_info(stream, "c")
        assert info.num_ack_pending == 0
        assert info.ack_floor.stream_seq == 1
    finally:
        with contextlib.suppress(nats.errors.Error):
            await js.delete_stream(stream)
        await nc.close()
