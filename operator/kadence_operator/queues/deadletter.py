"""Dead letters JetStream gave up on: copy them to the Queue's DLQ, then remove them.

In a work-queue stream a message that reached ``maxDeliver`` stays in the stream, unacked and never
delivered again; JetStream announces it with a max-deliveries advisory. Advisories are captured in
the durable ``KADENCE_ADVISORIES`` stream, so none is lost while the operator is down; the operator
consumes them with a durable consumer, copies the message to the DLQ with headers saying why, and
then deletes it from the work stream. The advisory is acknowledged only after both succeeded.

Messages a worker rejects as poison are copied to the DLQ by the worker itself before it
terminates them (a terminated message leaves a work-queue stream at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from kadence import constants

logger = logging.getLogger(__name__)

ADVISORY_CONSUMER = "kadence-operator-dlq"


async def ensure_advisory_stream(js: JetStreamContext) -> None:
    """The stream that keeps max-deliveries advisories of every Kadence work stream."""
    config = jsapi.StreamConfig(
        name=constants.ADVISORIES_STREAM,
        description="JetStream advisories Kadence acts on (max deliveries)",
        subjects=[f"{constants.MAX_DELIVERIES_ADVISORY}.KADENCE_*.>"],
        retention=jsapi.RetentionPolicy.WORK_QUEUE,
        max_age=7 * 24 * 3600,
    )
    try:
        await js.stream_info(constants.ADVISORIES_STREAM)
    except NotFoundError:
        await js.add_stream(config=config)
    await js.add_consumer(
        constants.ADVISORIES_STREAM,
        config=jsapi.ConsumerConfig(
            durable_name=ADVISORY_CONSUMER,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=30,
        ),
    )


def parse_stream_queue(stream: str) -> tuple[str, str] | None:
    """``KADENCE_<ns>_<queue>`` → (ns, queue); None for other streams (the DLQs, results, …)."""
    if not stream.startswith("KADENCE_") or stream.startswith(("KADENCE_DLQ_", "KADENCE_RESULTS")):
        return None
    rest = stream[len("KADENCE_") :]
    namespace, sep, queue = rest.partition("_")
    return (namespace, queue) if sep and namespace and queue else None


async def move_to_dlq(
    js: JetStreamContext, *, stream: str, sequence: int, deliveries: int, reason: str
) -> bool:
    """Copy message ``sequence`` of ``stream`` to its Queue's DLQ and delete it from ``stream``.

    Returns False when the message is already gone (handled before a restart) — that is success.
    """
    parsed = parse_stream_queue(stream)
    if parsed is None:
        return False
    namespace, queue = parsed
    try:
        raw = await js.get_msg(stream, seq=sequence)
    except NotFoundError:
        return False
    headers = dict(raw.headers or {})
    headers.update(
        {
            constants.DLQ_REASON_HEADER: reason,
            constants.DLQ_SUBJECT_HEADER: raw.subject or "",
            constants.DLQ_DELIVERIES_HEADER: str(deliveries),
            constants.DLQ_STREAM_SEQ_HEADER: str(sequence),
            # The copy must not be mistaken for a duplicate of the original run request.
            constants.MSG_ID_HEADER: f"dlq:{stream}:{sequence}",
        }
    )
    await js.publish(constants.dlq_subject(namespace, queue), raw.data or b"", headers=headers)
    with contextlib.suppress(NotFoundError):
        await js.delete_msg(stream, sequence)
    return True


async def run_mover(js: JetStreamContext, stop: asyncio.Event) -> None:
    """Consume max-deliveries advisories until ``stop``; each one becomes a DLQ entry."""
    sub = await js.pull_subscribe_bind(ADVISORY_CONSUMER, stream=constants.ADVISORIES_STREAM)
    while not stop.is_set():
        try:
            msgs: list[Msg] = await sub.fetch(16, timeout=1)
        except TimeoutError:
            continue
        except Exception as error:
            logger.warning("advisory fetch failed: %s", error)
            await asyncio.sleep(1)
            continue
        for msg in msgs:
            await _handle(js, msg)


async def _handle(js: JetStreamContext, msg: Msg) -> None:
    try:
        advisory: dict[str, Any] = json.loads(msg.data)
        stream = str(advisory["stream"])
        sequence = int(advisory["stream_seq"])
        deliveries = int(advisory.get("deliveries", 0))
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("dropping unreadable advisory: %s", error)
        await msg.term()
        return
    try:
        moved = await move_to_dlq(
            js,
            stream=stream,
            sequence=sequence,
            deliveries=deliveries,
            reason=f"max deliveries reached ({deliveries})",
        )
    except Exception as error:
        logger.warning("could not dead-letter %s#%d, will retry: %s", stream, sequence, error)
        await msg.nak(delay=2)
        return
    if moved:
        logger.info("dead-lettered %s#%d after %d deliveries", stream, sequence, deliveries)
    await msg.ack()
