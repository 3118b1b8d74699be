"""Consume the results stream and fold each result into its Job's status.

A durable pull consumer on ``KADENCE_RESULTS``; each result becomes a status mutation (the pure
fold) submitted to the coalesced status writer, and the message is acknowledged only after the
mutation is persisted — an operator crash between arrival and write loses nothing, the result is
redelivered and the fold, being idempotent, records it once. While a message waits for its write
(a status interval, or longer while the API server is slow or down) it is kept claimed with
in-progress acks, so the consumer's ack wait only decides how long the results an operator took
before it died stay hidden: ``KADENCE_RESULTS_ACK_WAIT``, 15 s by default.

A message may hold several results of one Job (a worker's batch,
:class:`~kadence.protocol.ResultBatch`): it is acknowledged once all of them are persisted.
Results for a Job that no longer exists are acknowledged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi

from kadence import constants, streamspec
from kadence.protocol import DecodeError, RunResult, RunState, decode_results
from kadence_operator.api import MAX_HISTORY
from kadence_operator.queues import streams
from kadence_operator.results import fold
from kadence_operator.statuswriter import ObjectGone, Status, StatusWriter, wait_hold

logger = logging.getLogger(__name__)
#: History limits used for a Job this operator has not seen yet (it restarted, and the Job's
#: watch event has not come): the largest the API allows, so that nothing is trimmed that the
#: Job's own limits keep; the next status change with the Job known trims to them.
UNKNOWN_LIMITS = (MAX_HISTORY, MAX_HISTORY)


Limits = Callable[[str, str], tuple[int, int] | None]
Notify = Callable[[RunResult], Awaitable[None]]


async def ensure_results_stream(
    js: JetStreamContext, *, duplicate_window: float, ack_wait: float
) -> None:
    """The results stream and the operator's durable consumer of it (its ``ack_wait`` set to
    this operator's; an existing consumer is updated).

    Replicated (3) where JetStream is clustered, so losing a NATS server loses no result.
    """
    config = streamspec.results_stream(duplicate_window=duplicate_window)
    await streams.ensure_operator_stream(js, config)
    await js.add_consumer(
        constants.RESULTS_STREAM,
        config=jsapi.ConsumerConfig(
            durable_name=constants.RESULTS_CONSUMER,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=20_000,
            deliver_policy=jsapi.DeliverPolicy.ALL,
        ),
    )


def _mutation(
    result: RunResult, limits: tuple[int, int], generation: int | None, status: Status
) -> Status:
    outcome = fold.fold_result(
        status, result, limits=limits, generation=generation, now=datetime.now(UTC)
    )
    if not outcome.accepted:
        logger.info("result %s#%d rejected: %s", result.run_id, result.attempt, outcome.reason)
    return outcome.status


class ResultsConsumer:
    def __init__(
        self,
        *,
        js: JetStreamContext,
        writer: StatusWriter,
        limits: Limits,
        on_final: Notify | None = None,
        ack_wait: float = 15.0,
    ) -> None:
        self._js = js
        self._ack_wait = ack_wait
        #: Fetched messages not acknowledged yet (by ``id``: a ``Msg`` is not hashable), with
        #: when they were fetched or last kept claimed.
        self._waiting: dict[int, tuple[Msg, float]] = {}
        self._writer = writer
        self._limits = limits
        self._on_final = on_final
        self.folded = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Seconds to wait before folding a fetched batch (see ``StatusWriter.hold``).
        self.hold: Callable[[], float] | None = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self._js.pull_subscribe_bind(
            constants.RESULTS_CONSUMER, stream=constants.RESULTS_STREAM
        )
        keeper = asyncio.ensure_future(self._keep_claimed(stop))
        try:
            while not stop.is_set():
                try:
                    msgs: list[Msg] = await sub.fetch(256, timeout=1)
                except TimeoutError:
                    continue
                except Exception as error:
                    logger.warning("results fetch failed: %s", error)
                    await asyncio.sleep(1)
                    continue
                await wait_hold(self.hold)
                for msg in msgs:
                    await self._handle(msg)
        finally:
            keeper.cancel()
            # An open pull subscription would make the connection's drain wait its full timeout.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _keep_claimed(self, stop: asyncio.Event) -> None:
        """Every third of the ack wait, an in-progress ack for each message still waiting for
        its status write after a third of the ack wait: JetStream redelivers none of them."""
        period = self._ack_wait / 3
        while not stop.is_set():
            await asyncio.sleep(period)
            due = time.monotonic() - period
            for key, (msg, since) in list(self._waiting.items()):
                if since <= due and key in self._waiting:
                    self._waiting[key] = (msg, time.monotonic())
                    self._spawn(_in_progress(msg))

    async def _handle(self, msg: Msg) -> None:
        try:
            decoded = decode_results(msg.data)
        except DecodeError as error:
            logger.warning("dropping undecodable result on %s: %s", msg.subject, error)
            await msg.term()
            return
        for problem in decoded.errors:
            logger.warning("dropping an undecodable result on %s: %s", msg.subject, problem)
        folding = [
            r for r in decoded.results if r.job is not None and r.job.name != constants.ADHOC_JOB
        ]
        if not folding:
            await msg.ack()  # ad-hoc runs (kadence enqueue): no Job to fold them into
            return
        # A batch (several results of one Job in one message) is acked once all of them are
        # persisted; if any is not, the whole message comes again and the fold, idempotent,
        # records the others once.
        pending = _Pending(msg, len(folding))
        self._waiting[id(msg)] = (msg, time.monotonic())
        for result in folding:
            job = result.job
            assert job is not None
            limits = self._limits(job.namespace, job.name) or UNKNOWN_LIMITS
            future = self._writer.submit(
                job.namespace,
                job.name,
                functools.partial(_mutation, result, limits, None),
                uid=job.uid,
            )
            future.add_done_callback(functools.partial(self._done, pending, result))

    def _done(self, pending: _Pending, result: RunResult, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None and not isinstance(error, ObjectGone):
            # Not persisted: let JetStream redeliver it after ack_wait.
            logger.warning("result %s not persisted: %s", result.run_id, error)
            pending.failed = True
        else:
            self.folded += 1
        pending.left -= 1
        if pending.left == 0:
            self._waiting.pop(id(pending.msg), None)
            if not pending.failed:
                self._spawn(pending.msg.ack())
        if (
            error is None
            and self._on_final is not None
            and result.state
            not in (
                RunState.RUNNING,
                RunState.RETRYING,
            )
        ):
            self._spawn(self._on_final(result))


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):  # the connection is down: JetStream redelivers it
        await msg.in_progress()


@dataclasses.dataclass(slots=True)
class _Pending:
    """A results message whose results are being persisted: acked when the last one is."""

    msg: Msg
    left: int
    failed: bool = False
