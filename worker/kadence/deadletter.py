"""The headers of a dead-lettered message: why it was dead-lettered, from where, after how many
deliveries (pure).

A worker that gives up on a message (undecodable, oversize, unknown task, failed for good) copies
it to its Queue's dead-letter stream with these headers; the operator writes the same headers on
the messages JetStream stopped delivering (``kadence_operator.queues.deadletter``). The header
names are in :mod:`kadence.constants`.
"""

from __future__ import annotations

from collections.abc import Mapping

from kadence import constants
from kadence.protocol import DeadLetterReason

#: Header values are single lines; long errors are cut to keep messages small.
_MAX_HEADER_VALUE = 2048


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

    The original's ``Nats-*`` headers are dropped (expectations such as ``Nats-Expected-Stream``
    would make the copy fail). ``Nats-Msg-Id`` is the original stream and sequence, so copying
    the same message twice (a worker that crashed between copying and terminating it) keeps one
    copy.
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
