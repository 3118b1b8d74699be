"""QueueMessage reads its delivery count from the ack subject, as nats-py's metadata does."""

from __future__ import annotations

from typing import Any, cast

import nats.errors
import pytest
from nats.aio.msg import Msg

from kadence.consumer import QueueMessage


def message(reply: str) -> QueueMessage:
    return QueueMessage(Msg(_client=cast(Any, None), subject="kadence.ns.q.0", reply=reply))


@pytest.mark.parametrize(
    ("reply", "delivered"),
    [
        ("$JS.ACK.KADENCE_ns_q.partition-0.1.42.40.1764489600000000000.0", 1),
        ("$JS.ACK.KADENCE_ns_q.partition-3.7.42.40.1764489600000000000.12", 7),
        # domain and account hash (nats-server 2.9+ may send this form), with the random token
        ("$JS.ACK.hub.ACCHASH.KADENCE_ns_q.partition-0.3.42.40.1764489600000000000.0.tok", 3),
        ("$JS.ACK._.ACCHASH.KADENCE_ns_q.partition-0.12.42.40.1764489600000000000.5.tok", 12),
    ],
)
def test_num_delivered_matches_the_metadata(reply: str, delivered: int) -> None:
    msg = message(reply)
    assert msg.num_delivered == delivered
    assert msg.num_delivered == msg.msg.metadata.num_delivered


def test_a_message_without_an_ack_subject_is_refused() -> None:
    with pytest.raises(nats.errors.NotJSMessageError):
        _ = message("_INBOX.abc").num_delivered
