"""How the client encodes the messages of a fast batch (ADR-50), reads the server's answers to
it, and which servers take them. The answers are those nats-server 2.15 sends (seen against the
real server in tests/integration/test_client.py); a plain PubAck is what a server without fast
batches sends."""

from __future__ import annotations

from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import ServerVersion
from nats.aio.msg import Msg

from kadence.client import (
    FastBatchError,
    Requests,
    _fast_batch_outcome,
    _wire,
    fast_batches_supported,
)


def answer(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.b-0.500.fail.1.0.$FI", data=data, headers=headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "written", "expected"),
    [
        # flow acks: the batch goes on
        (b'{"type":"ack","seq":0,"msgs":500}', 100, False),
        (b'{"type":"ack","seq":500,"msgs":500}', 1000, False),
        # the end: stored whole (duplicates dropped by Nats-Msg-Id count as taken)
        (b'{"stream":"Q","seq":1100,"batch":"b-0","count":100}', 100, True),
        (b'{"stream":"Q","seq":0,"batch":"b-0","count":5}', 5, True),
        # the end, short: some messages were not stored
        (b'{"stream":"Q","seq":16,"batch":"b-0","count":5}', 10, "stored 5 of 10"),
        # a message the stream refused, and the gap after it
        (
            b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds '
            b'maximum allowed"},"stream":"Q","seq":0}',
            10,
            "message size exceeds maximum allowed (err_code 10054)",
        ),
        (b'{"type":"gap","last_seq":6,"seq":7}', 10, "missed messages after 6 (got 7)"),
        (
            b'{"type":"err","seq":3,"error":{"code":400,"err_code":10071,"description":"x"}}',
            10,
            "x (err_code 10071)",
        ),
        (b"not json", 10, "unreadable answer"),
        (b"[1]", 10, "unreadable answer"),
    ],
)
def test_an_answer_goes_on_ends_or_fails_the_batch(
    data: bytes, written: int, expected: bool | str
) -> None:
    outcome = _fast_batch_outcome(answer(data), written)
    if isinstance(expected, bool):
        assert outcome is expected
        return
    assert isinstance(outcome, FastBatchError)
    assert expected in str(outcome)
    assert not outcome.unsupported


@pytest.mark.parametrize(
    "data",
    [
        # a stream without allow_batched
        b'{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},'
        b'"stream":"P","seq":0}',
        # a server without fast batches took the message as a publish of its own
        b'{"stream":"Q","seq":7}',
    ],
)
def test_a_server_or_stream_without_fast_batches_is_told_apart(data: bytes) -> None:
    outcome = _fast_batch_outcome(answer(data), 10)
    assert isinstance(outcome, FastBatchError)
    assert outcome.unsupported


def test_no_stream_for_the_subject() -> None:
    outcome = _fast_batch_outcome(answer(b"", {"Status": "503"}), 10)
    assert isinstance(outcome, nats.js.errors.NoStreamResponseError)


class Connected:
    def __init__(self, version: str) -> None:
        self.connected_server_version = ServerVersion(version)


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("2.15.1", True),
        ("2.14.0", True),
        ("2.14.0-RC.1", True),
        ("3.0.0", True),
        ("2.12.3", False),
        ("2.10.22", False),
        ("0.0.0-unknown", False),  # nats-py's answer while not connected
        ("nonsense", False),
    ],
)
def test_servers_from_2_14_take_fast_batches(version: str, supported: bool) -> None:
    nc: Any = Connected(version)
    assert fast_batches_supported(nc) is supported


async def test_an_older_server_gets_no_batch() -> None:
    """It would store every message as a publish of its own, the end-of-batch marker too."""
    nc: Any = Connected("2.12.3")
    requests = Requests(nc)
    requests._prefix = "_INBOX.x."  # as if ready
    assert not requests.fast_batches
    with pytest.raises(FastBatchError, match=r"v2\.12\.3> does not take them") as refused:
        requests.batch()
    assert refused.value.unsupported
    assert requests.pending == 0


class ServerNATS:
    """What Requests.prepare and Requests.batch read of a connection: the server's version."""

    connected_server_version = ServerVersion("2.15.1")


@pytest.mark.parametrize(
    ("discarded", "expected_reused"),
    [
        pytest.param((), [True, True, True, True], id="none-discarded"),
        pytest.param((0,), [False, False, False], id="the-first-discarded"),
        pytest.param((2,), [True, True, False], id="one-in-the-middle-discarded"),
        pytest.param((3,), [True, True, True], id="the-last-discarded"),
    ],
)
async def test_a_batch_message_is_encoded_for_its_place_before_it_is_written(
    discarded: tuple[int, ...], expected_reused: list[bool]
) -> None:
    """Prepared into a batch, a message is encoded whole for the sequence it takes if nothing
    before it is discarded; written after a discarded one it is encoded again, so the
    sequence the server sees has no gap and starts with the start operation."""
    requests = Requests(ServerNATS())  # type: ignore[arg-type]
    requests._prefix = "_INBOX.abc."
    batch = requests.batch(timeout=10)
    headers = {"Nats-Msg-Id": "run"}
    prepared = [
        requests.prepare("kadence.ns.q.0", b"%d" % i, headers=headers, batch=batch)
        for i in range(4)
    ]
    for i in discarded:
        requests.discard(prepared[i])
    kept = [p for i, p in enumerate(prepared) if i not in discarded]
    placed = [batch.place(p) for p in kept]
    assert [b is p.placed for b, p in zip(placed, kept, strict=True)] == expected_reused
    # The bytes are those of a request to the batch's reply subject for its place: 0 starts
    # the batch, 1 appends to it.
    assert placed == [
        _wire(
            "kadence.ns.q.0",
            f"{batch.reply}{n}.{0 if n == 1 else 1}.$FI",
            b"%d" % prepared.index(p),
            headers,
        )
        for n, p in enumerate(kept, start=1)
    ]
    assert requests._sweeper is not None
    requests._sweeper.cancel()
