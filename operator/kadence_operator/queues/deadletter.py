"""Dead letters JetStream gave up on: copy them to the Queue's DLQ, then remove them.

In a work-queue stream a message that reached ``maxDeliver`` stays in the stream, unacked and never
delivered again; JetStream announces it with a max-deliveries advisory. Advisories are captured in
the durable ``KADENCE_ADVISORIES`` stream, so none is lost while the operator is down; the operator
consumes them with a durable consumer, copies the message to the DLQ with headers saying why,
reports the run ``DeadLettered`` on the results stream (no worker will: the last one to hold the
message gave up on it or died), and then deletes it from the work stream. The advisory is
acknowledged only after all three succeeded; the report's ``Nats-Msg-Id`` makes a retry store it
once, and the fold keeps a run's first final state, so a run that ended before is not changed.

Messages a worker rejects as poison are copied to the DLQ by the worker itself before it
terminates them (a terminated message leaves a work-queue stream at once).

The advisory subject is ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`` and its
JSON payload carries ``stream``, ``consumer``, ``stream_seq`` and ``deliveries``. NATS wildcards
match whole tokens only (``KADENCE_*`` would be a literal token), so the stream captures the
advisories of every stream and the mover skips those that are not a Kadence partition consumer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NoStreamResponseError, NotFoundError

from kadence import constants, deadletter
from kadence.protocol import (
    DeadLetterReason,
    DecodeError,
    RunError,
    RunResult,
    RunState,
    decode_run,
    encode,
    salvage_ids,
)
from kadence_operator.queues import streams

logger = logging.getLogger(__name__)

ADVISORY_CONSUMER = "kadence-operator-dlq"
#: ``<prefix>.<stream>.<consumer>``: stream and consumer names never contain dots.
ADVISORY_SUBJECT = f"{constants.MAX_DELIVERIES_ADVISORY}.*.*"
#: Value of ``Kadence-Dead-Reason`` for messages JetStream stopped delivering (``maxDeliver``).
MAX_DELIVERIES_REASON = DeadLetterReason.MAX_DELIVERIES
#: How often an advisory is retried while its Queue has no DLQ stream before the message is dropped
#: (``deadLetter.enabled: false``); meanwhile a DLQ deleted behind the operator's back is restored.
DLQ_MISSING_ATTEMPTS = 5
DLQ_MISSING_DELAY = 5.0


async def ensure_advisory_stream(js: JetStreamContext) -> None:
    """The stream that keeps max-deliveries advisories, and the operator's consumer of it.

    Created with 3 replicas where JetStream is clustered (so losing a server loses no
    advisory), with 1 on a single server (:func:`streams.ensure_operator_stream`). An existing
    stream with other subjects (an older operator's) is corrected in place.
    """
    config = jsapi.StreamConfig(
        name=constants.ADVISORIES_STREAM,
        description="JetStream advisories Kadence acts on (max deliveries)",
        subjects=[ADVISORY_SUBJECT],
        retention=jsapi.RetentionPolicy.WORK_QUEUE,
        max_age=7 * 24 * 3600,
    )
    await streams.ensure_operator_stream(js, config)
    await js.add_consumer(
        constants.ADVISORIES_STREAM,
        config=jsapi.ConsumerConfig(
            durable_name=ADVISORY_CONSUMER,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=30,
        ),
    )


def dlq_headers(
    original: dict[str, str], *, stream: str, sequence: int, subject: str, deliveries: int
) -> dict[str, str]:
    """Headers of the DLQ copy of a message JetStream stopped delivering: the same headers a
    worker writes (:func:`kadence.deadletter.dlq_headers`), with reason ``MaxDeliveries``."""
    return deadletter.dlq_headers(
        reason=MAX_DELIVERIES_REASON,
        subject=subject,
        deliveries=deliveries,
        error=f"JetStream delivered it {deliveries} times without an acknowledgement (maxDeliver)",
        stream=stream,
        stream_sequence=sequence,
        original=original,
    )


def dead_lettered_result(
    data: bytes, *, namespace: str, deliveries: int, now: datetime
) -> tuple[str, RunResult] | None:
    """The ``DeadLettered`` report of a run request JetStream stopped delivering, and the
    results subject it goes to; None when the message does not say which run it was."""
    run_id: str | None
    try:
        request = decode_run(data)
        run_id, job = request.run_id, request.job
        scheduled_at, trigger = request.scheduled_at, request.trigger
    except DecodeError:
        (run_id, job), scheduled_at, trigger = salvage_ids(data), None, None
    if run_id is None:
        return None
    result = RunResult(
        run_id=run_id,
        attempt=max(deliveries, 1),
        job=job,
        state=RunState.DEAD_LETTERED,
        finished_at=now,
        scheduled_at=scheduled_at,
        trigger=trigger,
        error=RunError(
            type=str(MAX_DELIVERIES_REASON),
            message=f"JetStream delivered it {deliveries} times without an acknowledgement "
            "(the Queue's maxDeliver); it is in the dead-letter stream",
        ),
    )
    subject = constants.results_subject(
        job.namespace if job is not None else namespace,
        job.name if job is not None else constants.ADHOC_JOB,
    )
    return subject, result


class NoDeadLetterStream(Exception):
    """The Queue has no DLQ stream (dead-lettering disabled, or the stream was deleted)."""


async def move_to_dlq(
    js: JetStreamContext, *, stream: str, sequence: int, deliveries: int, drop: bool = False
) -> bool:
    """Copy message ``sequence`` of ``stream`` to its Queue's DLQ, report its run
    ``DeadLettered`` and delete it from ``stream``.

    Returns False when the message is already gone (handled before a restart) — that is success.
    Raises :class:`NoDeadLetterStream` when nothing stores the DLQ subject, unless ``drop``: then
    the message is deleted without a copy.
    """
    parsed = constants.queue_of_stream(stream)
    if parsed is None:
        return False
    namespace, queue = parsed
    try:
        raw = await js.get_msg(stream, seq=sequence)
    except NotFoundError:
        return False
    headers = dlq_headers(
        dict(raw.headers or {}),
        stream=stream,
        sequence=sequence,
        subject=raw.subject or "",
        deliveries=deliveries,
    )
    try:
        await js.publish(constants.dlq_subject(namespace, queue), raw.data or b"", headers=headers)
    except NoStreamResponseError:
        if not drop:
            raise NoDeadLetterStream(constants.dlq_stream_name(namespace, queue)) from None
    report = dead_lettered_result(
        raw.data or b"", namespace=namespace, deliveries=deliveries, now=datetime.now(UTC)
    )
    if report is not None:
        subject, result = report
        await js.publish(
            subject, encode(result), headers={constants.MSG_ID_HEADER: result.dedupe_id}
        )
    with contextlib.suppress(NotFoundError):
        await js.delete_msg(stream, sequence)
    return True


async def run_mover(js: JetStreamContext, stop: asyncio.Event) -> None:
    """Consume max-deliveries advisories until ``stop``; each one becomes a DLQ entry."""
    sub = await js.pull_subscribe_bind(ADVISORY_CONSUMER, stream=constants.ADVISORIES_STREAM)
    failing = False
    try:
        while not stop.is_set():
            try:
                msgs: list[Msg] = await sub.fetch(16, timeout=1)
            except TimeoutError:
                continue
            except Exception as error:
                # Once per outage (a failover answers 503 for seconds), not once per second.
                log = logger.debug if failing else logger.warning
                log("advisory fetch failed, retrying every second: %s", error)
                failing = True
                await asyncio.sleep(1)
                continue
            if failing:
                logger.info("advisory fetch works again")
                failing = False
            for msg in msgs:
                await _handle(js, msg)
    finally:
        # A subscription left behind makes the connection's drain() wait for its timeout.
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _handle(js: JetStreamContext, msg: Msg) -> None:
    try:
        advisory: dict[str, Any] = json.loads(msg.data)
        stream = str(advisory["stream"])
        consumer = str(advisory["consumer"])
        sequence = int(advisory["stream_seq"])
        deliveries = int(advisory.get("deliveries", 0))
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("dropping unreadable advisory: %s", error)
        await msg.term()
        return
    if constants.queue_of_stream(stream) is None or constants.partition_of(consumer) is None:
        await msg.ack()  # another application's stream or consumer: not ours to touch
        return
    attempt = msg.metadata.num_delivered or 1
    try:
        moved = await move_to_dlq(
            js,
            stream=stream,
            sequence=sequence,
            deliveries=deliveries,
            drop=attempt >= DLQ_MISSING_ATTEMPTS,
        )
    except NoDeadLetterStream as missing:
        logger.info("no dead-letter stream %s yet for %s#%d", missing, stream, sequence)
        await msg.nak(delay=DLQ_MISSING_DELAY)
        return
    except Exception as error:
        logger.warning("could not dead-letter %s#%d, will retry: %s", stream, sequence, error)
        await msg.nak(delay=2)
        return
    if moved:
        logger.info("dead-lettered %s#%d after %d deliveries", stream, sequence, deliveries)
    await msg.ack()
