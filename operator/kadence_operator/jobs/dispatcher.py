"""Publishing runs and cancels, and recording what JetStream acknowledged.

The scheduler's executor hands each :class:`~kadence_operator.jobs.plan.Publish` and
:class:`~kadence_operator.jobs.plan.Cancel` here. Run requests go out with ``Nats-Msg-Id = runId``
(so a slot published twice -- by two replicas, a restart, a retry -- is enqueued once) through one
request multiplexer (:class:`kadence.client.Requests`: one reply subscription, not a request
each); once JetStream acked a run, it is counted and recorded in the Job's status through the
coalesced status writer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck

from kadence import constants
from kadence.protocol import CancelRequest, encode
from kadence.requests import Requests, replied_at
from kadence_operator import timefmt
from kadence_operator.jobs import plan
from kadence_operator.jobs.entry import Armed, Entry
from kadence_operator.jobs.runs import QueueInfo, request_template
from kadence_operator.metrics import OperatorMetrics
from kadence_operator.results import fold
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Guard, Status, StatusWriter

logger = logging.getLogger(__name__)
#: Seconds to wait for JetStream's acknowledgement of a run request.
PUBLISH_TIMEOUT = 10.0
#: Replies to fires are settled at most this many, and for at most this many seconds, at a
#: time (see :class:`ReplySettler`).
SETTLE_SLICE = 100
SETTLE_BUDGET = 0.002
#: While a burst's acks are still coming, settling waits (looking again every SETTLE_POLL
#: seconds) so the read loop has the CPU to take them, for at most SETTLE_DEFER seconds.
SETTLE_DEFER = 0.1
SETTLE_POLL = 0.002


class Dispatcher:
    """Publishes the runs and cancels of fires and records the acknowledged runs."""

    def __init__(
        self,
        *,
        nc: NATS,
        writer: StatusWriter,
        settings: OperatorSettings,
        metrics: OperatorMetrics | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._nc = nc
        self.requests = Requests(nc)
        self._writer = writer
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        #: Run requests acknowledged by JetStream, and how many of them were duplicates.
        self.published = 0
        self.duplicates = 0
        #: The status guard of each shard (:meth:`fence`); none: every decision is written.
        self._guards: dict[int, Guard] = {}
        self._ownership: Callable[[int], bool | None] | None = None

    def fence(self, ownership: Callable[[int], bool | None]) -> None:
        """Write this replica's decisions for a Job only while it holds the Job's shard
        (:meth:`~kadence_operator.shards.ShardLeases.ownership`, the writer's guards)."""
        self._ownership, self._guards = ownership, {}

    def submit(
        self, entry: Entry, mutation: Callable[[Status], Status], *, supersede: str | None = None
    ) -> None:
        guard = None
        if self._ownership is not None:
            guard = self._guards.get(entry.shard)
            if guard is None:
                guard = self._guards[entry.shard] = functools.partial(self._ownership, entry.shard)
        self._writer.post(
            entry.namespace, entry.name, mutation, uid=entry.uid, supersede=supersede, guard=guard
        )

    def count(self, reason: str, amount: int = 1) -> None:
        if self._metrics is not None and amount:
            self._metrics.slots_not_run.labels(reason).inc(amount)

    async def publish(self, entry: Entry, queue: QueueInfo, run: plan.Publish) -> None:
        """Publish one run and, once JetStream acknowledged it, record it."""
        template = entry.template
        if template is None or entry.template_queue != queue:
            template = request_template(
                spec=entry.spec,
                job=entry.ref,
                queue=queue,
                default_bucket=self._settings.output_bucket,
            )
            entry.template, entry.template_queue = template, queue
        ack = await self.requests.publish(
            template.subject,
            template.encode(run_id=run.run_id, scheduled_at=run.slot, trigger=run.trigger),
            timeout=PUBLISH_TIMEOUT,
            headers={constants.MSG_ID_HEADER: run.run_id},
        )
        self.published_run(entry, ack, run)

    def arm(self, entry: Entry, effect: plan.Arm) -> None:
        """Prepare the next on-time run's request, if the Job's template is at hand."""
        template, queue = entry.template, entry.template_queue
        if template is None or queue is None:
            return
        entry.armed = Armed(
            planned=effect.planned,
            run_id=effect.run_id,
            subject=template.subject,
            payload=template.encode(
                run_id=effect.run_id, scheduled_at=effect.planned.slot, trigger="Schedule"
            ),
            version=entry.version,
            generation=entry.generation,
            queue=queue,
        )

    def published_run(
        self, entry: Entry, ack: PubAck, run: plan.Publish, *, acked: datetime | None = None
    ) -> None:
        """JetStream acknowledged ``run`` (at ``acked``, by default now): count it and record
        it in the status."""
        if acked is None:
            acked = self._clock()
        self.published += 1
        entry.sent[run.run_id] = time.monotonic()
        if self._metrics is not None:
            self._metrics.dispatches.labels(run.trigger).inc()
            if run.due is not None:
                self._metrics.observe_lag(max(0.0, (acked - run.due).total_seconds()))
        if ack.duplicate:
            self.duplicates += 1
            if self._metrics is not None:
                self._metrics.duplicates.inc()
            logger.info(
                "run %s (%s) of %s/%s was already enqueued: JetStream dropped the duplicate",
                run.run_id,
                timefmt.rfc3339(run.slot),
                *entry.key,
            )
        else:
            logger.debug(
                "dispatched run %s (%s, %s) of %s/%s",
                run.run_id,
                timefmt.rfc3339(run.slot),
                run.trigger,
                *entry.key,
            )
        self.submit(
            entry,
            functools.partial(
                fold.record_dispatch,
                run_id=run.run_id,
                scheduled_at=run.slot,
                trigger=run.trigger,
                limits=entry.limits,
            ),
        )

    async def cancel(self, entry: Entry) -> None:
        """Replace policy: ask workers to cancel the Job's running attempt (core NATS).

        The replaced runs stop counting as active here at once; the worker's ``Cancelled``
        result ends them in the status.
        """
        replaced = entry.active_runs()
        request = CancelRequest(job_uid=entry.uid, run_ids=tuple(sorted(replaced)))
        await self._nc.publish(
            constants.cancel_subject(entry.namespace, entry.name), encode(request)
        )
        if self._metrics is not None:
            self._metrics.cancels.inc()
        now = time.monotonic()
        for run_id in replaced:
            entry.sent.pop(run_id, None)
            entry.ended[run_id] = now
        logger.info("%s/%s: asked workers to cancel %s (Replace)", *entry.key, sorted(replaced))


Settle = Callable[[Entry, Armed, datetime, "asyncio.Future[Msg]", datetime], None]


class ReplySettler:
    """Settles the replies to armed and staged fires a slice at a time, after the burst's acks.

    A burst's replies come a thousand at a time and each costs ~100 µs of bookkeeping (the
    status change, the next slot, its encoded request): taken one after the other in the
    replies' done callbacks, the last ack would be read only after all the others' bookkeeping.
    So :meth:`acked` only notes when each ``PubAck`` came -- the moment the reply subscription
    took it (:func:`replied_at`), which under load is milliseconds before the callback runs --
    and the bookkeeping (``settle``) runs once the burst's other replies are in (``outstanding``
    is false) or :data:`SETTLE_DEFER` has passed, :data:`SETTLE_SLICE` and :data:`SETTLE_BUDGET`
    at a time: between slices the read loop can take the replies still coming.
    """

    def __init__(
        self, *, settle: Settle, outstanding: Callable[[], bool], clock: Callable[[], datetime]
    ) -> None:
        self._settle = settle
        self._outstanding = outstanding
        self._clock = clock
        self.replies: list[tuple[Entry, Armed, datetime, asyncio.Future[Msg], datetime]] = []

    def acked(self, entry: Entry, armed: Armed, now: datetime, reply: asyncio.Future[Msg]) -> None:
        """The reply future's done callback, run right after the reply subscription resolved
        it."""
        acked = self._clock()
        read_at = replied_at(reply)
        if read_at is not None:  # taken off the connection a little earlier
            acked -= timedelta(seconds=max(0.0, time.monotonic() - read_at))
        self.replies.append((entry, armed, now, reply, acked))
        if len(self.replies) == 1:
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        replies = self.replies
        if not replies:
            return
        if self._outstanding() and (self._clock() - replies[0][4]).total_seconds() < SETTLE_DEFER:
            asyncio.get_running_loop().call_later(SETTLE_POLL, self._run)
            return
        end = time.perf_counter() + SETTLE_BUDGET
        done = 0
        for entry, armed, now, reply, acked in replies[:SETTLE_SLICE]:
            self._settle(entry, armed, now, reply, acked)
            done += 1
            if time.perf_counter() >= end:
                break
        del replies[:done]
        if replies:
            asyncio.get_running_loop().call_soon(self._run)
