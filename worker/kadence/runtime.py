"""The worker: pulls run requests from a Queue, runs their tasks and reports the outcomes.

One :class:`Worker` serves one Queue with ``concurrency`` slots; async tasks run on the event
loop, sync tasks in a thread pool (:class:`~kadence.threads.TaskThreads`), or for
``isolation="process"`` in child processes (:class:`~kadence.processes.TaskProcesses`) that are
killed ``kill_grace`` seconds after SIGTERM when an attempt ends early. For each message:

1. decode it; an undecodable, oversize or unknown-task message is dead-lettered and terminated
   (and reported ``DeadLettered`` when its run is known);
2. for locking concurrency policies, take the Job's Lease (:mod:`kadence.locking`), or put the
   message back with a delay: the run was not attempted, nothing is reported;
3. run the attempt (:mod:`kadence.attempt`): heartbeats every third of the ack wait and the
   ``Running`` report once it has run ``running_report_delay`` seconds (:mod:`kadence.heartbeats`),
   the timeout, the Lease's renewal, the return value stored, to an
   :class:`~kadence.outcomes.Outcome`;
4. free the slot (within the settle limit), count and log the attempt (:mod:`kadence.tally`) and
   hand the outcome to the :class:`~kadence.settling.Settler`, the one path from an outcome to
   the end of its message: dead-letter copy, report, then ack/nak/term, Lease release, slot.

The messages come from :mod:`kadence.fetching`'s pull loops, which ask only for as many as there
are free slots. Attempts are numbered by JetStream's delivery count, so a crash or a kill
mid-task counts as an attempt and the redelivery continues the count. On SIGTERM the worker
stops fetching, gives running tasks ``grace_period`` seconds, then stops the rest (reported
``Retrying``, put back) and waits for the reports and acks still out.

``Disposition``, ``Outcome``, ``classify``, ``failure``, ``run_attempt`` and ``store_value`` are
re-exported from their modules for code that imports them from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from kadence import constants
from kadence.app import App, CancelFlag, Context, TaskSpec
from kadence.attempt import HANDLER_CLEANUP, run_attempt, store_value
from kadence.client import KadenceClient
from kadence.config import default_worker_name
from kadence.consumer import QueueMessage
from kadence.fetching import Fetcher
from kadence.heartbeats import Beats, Heartbeats
from kadence.locking import JobLocks
from kadence.metrics import WorkerMetrics
from kadence.outcomes import Disposition, Outcome, classify, failure
from kadence.outcomes import replaced as replaced_by
from kadence.processes import KILL_GRACE, TaskProcesses
from kadence.protocol import (
    ConcurrencyPolicy,
    DeadLetterReason,
    DecodeError,
    JobRef,
    OversizeError,
    RunError,
    RunRequest,
    RunResult,
    RunState,
    decode_cancel,
    decode_run,
    salvage_ids,
)
from kadence.settling import Settler, Slot
from kadence.slots import Slots
from kadence.storage import ObjectStore, OutputWriter, output_location
from kadence.tally import Tally
from kadence.threads import TaskThreads

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock, LeaseClient

log = logging.getLogger("kadence.worker")

#: An attempt still running after this many seconds is reported ``Running``; shorter ones send
#: only their final report (the operator writes a Job's status every few seconds, so a
#: ``Running`` state that short would never be seen, yet it would cost a publish per run).
RUNNING_REPORT_DELAY = 0.5
#: Seconds between the worker's INFO summaries of the attempts it finished.
SUMMARY_INTERVAL = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class Worker:
    """Serves one Queue: fetches its run requests and runs them with an :class:`App`."""

    def __init__(
        self,
        app: App,
        client: KadenceClient,
        *,
        queue: str,
        concurrency: int = 1,
        storage: ObjectStore | None = None,
        output_bucket: str = constants.DEFAULT_OUTPUT_BUCKET,
        leases: LeaseClient | None = None,
        lease_duration: int = 15,
        metrics: WorkerMetrics | None = None,
        name: str | None = None,
        grace_period: float = 30.0,
        fetch_timeout: float = 5.0,
        max_batch: int = 64,
        partition_refresh: float = 30.0,
        settle_limit: int | None = None,
        running_report_delay: float = RUNNING_REPORT_DELAY,
        summary_interval: float = SUMMARY_INTERVAL,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.app = app
        self.client = client
        self.queue = queue
        self.namespace = client.namespace
        self.concurrency = concurrency
        self.storage = storage
        self.output_bucket = output_bucket
        self.leases = leases
        self.lease_duration = lease_duration
        self.metrics = metrics or WorkerMetrics()
        self.name = name or default_worker_name()
        self.grace_period = grace_period
        #: Finished runs that may be reporting and acking at once without holding a slot.
        self.settle_limit = settle_limit if settle_limit is not None else max(16, 4 * concurrency)
        self.running_report_delay = running_report_delay
        self.summary_interval = summary_interval
        #: Seconds between SIGTERM and SIGKILL for the child of an isolated task stopped early.
        self.kill_grace = kill_grace
        self._beats = Beats()
        self._stopping = asyncio.Event()
        #: Resolved when the grace period is over: every running attempt watches this one future.
        self._abort: asyncio.Future[None] | None = None
        self._slots = Slots(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._executor: TaskThreads | None = None
        #: Child processes of ``isolation="process"`` tasks, started on their first run.
        self._processes: TaskProcesses | None = None
        #: (Job uid, run id) -> resolved when the operator asks to cancel that running attempt.
        self._replaceable: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.fetcher = Fetcher(
            client,
            stream=self.stream,
            slots=self._slots,
            deliver=self._dispatch,
            put_back=lambda msg: self._spawn(self._put_back(msg)),
            stopping=self._stopping,
            fetch_timeout=fetch_timeout,
            max_batch=max_batch,
            partition_refresh=partition_refresh,
        )
        #: Set once the worker is bound to the Queue's partitions and fetching.
        self.ready = self.fetcher.ready
        self.settler = Settler(
            client,
            queue=queue,
            slots=self._slots,
            settle_limit=self.settle_limit,
            metrics=self.metrics,
        )
        self.locks = JobLocks(
            leases, duration=lease_duration, worker=self.name, metrics=self.metrics
        )
        self.tally = Tally(
            self.metrics, interval=summary_interval, in_flight=lambda: len(self._inflight)
        )
        # Read when scraped: no gauge update per message.
        self.metrics.in_flight.set_function(lambda: len(self._inflight) + self.settler.unsettled)

    def __repr__(self) -> str:
        return f"Worker({self.namespace}/{self.queue}, name={self.name!r})"

    @property
    def js(self) -> JetStreamContext:
        return self.client.js

    @property
    def stream(self) -> str:
        return constants.stream_name(self.namespace, self.queue)

    @property
    def partitions(self) -> list[int]:
        return self.fetcher.partitions

    @property
    def abandoned(self) -> int:
        """Sync handlers still running in their threads after their attempts ended."""
        return self.settler.abandoned

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (safe to call from a signal handler)."""
        self._stopping.set()

    # -- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the Queue until :meth:`stop`; then drain within the grace period."""
        self._abort = asyncio.get_running_loop().create_future()
        self._executor = TaskThreads(self.concurrency, name=f"kadence-{self.queue}")
        self._processes = TaskProcesses(store=self.storage, grace=self.kill_grace)
        log.info(
            "worker %s serving %s/%s (concurrency %d, tasks: %s)",
            self.name,
            self.namespace,
            self.queue,
            self.concurrency,
            ", ".join(sorted(self.app.tasks)),
        )
        cancels = await self.client.nc.subscribe(
            constants.cancel_subject(self.namespace, "*"), cb=self._on_cancel
        )
        refresher = asyncio.create_task(self.fetcher.run())
        summaries = asyncio.create_task(self.tally.run())
        try:
            await self._stopping.wait()
        finally:
            refresher.cancel()
            summaries.cancel()
            await asyncio.gather(refresher, summaries, return_exceptions=True)
            with contextlib.suppress(nats.errors.Error):
                await cancels.unsubscribe()
            await self._shutdown()

    async def _on_cancel(self, msg: Msg) -> None:
        """The operator replaces runs of a Job: stop those running here (Replace policy)."""
        try:
            request = decode_cancel(msg.data)
        except DecodeError as error:
            log.warning("ignoring a cancel request on %s: %s", msg.subject, error)
            return
        for run_id in request.run_ids:
            replaced = self._replaceable.get((request.job_uid, run_id))
            if replaced is not None and not replaced.done():
                log.info("run %s: the operator replaces it; stopping the attempt", run_id)
                replaced.set_result(None)

    def _dispatch(self, msg: Msg) -> None:
        """A fetched message, which holds one of the slots its pull request took."""
        if self._stopping.is_set():
            self._slots.give(1)
            self._spawn(self._put_back(msg))
            return
        task = asyncio.create_task(self._handle(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _put_back(self, msg: Msg) -> None:
        with contextlib.suppress(nats.errors.Error):
            await msg.nak()

    async def _shutdown(self) -> None:
        log.info("worker %s stopping: %d task(s) running", self.name, len(self._inflight))
        self._slots.close()
        await self.fetcher.aclose()
        if self._inflight:
            _, still = await asyncio.wait(set(self._inflight), timeout=self.grace_period)
            if still:
                log.warning("grace period over: cancelling %d task(s)", len(still))
                if self._abort is not None and not self._abort.done():
                    self._abort.set_result(None)
                await asyncio.wait(still, timeout=HANDLER_CLEANUP + 10)
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        # The reports, acks (and naks) of the runs that ended, and their confirmations.
        await self.settler.aclose()
        if self._processes is not None:
            await asyncio.to_thread(self._processes.shutdown)
        if self._executor is not None:
            self._executor.shutdown()
        self.tally.summarize()
        log.info("worker %s stopped", self.name)

    # -- one message ---------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        slot = self.settler.slot()
        try:
            await self._process(QueueMessage(msg, self.client.requests), slot)
        except Exception:
            # The worker must survive anything a message does; put it back and go on.
            log.exception("unexpected error handling a message from %s", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)
        finally:
            if not slot.handed_off:  # put back before any attempt (or a bug): settled here
                slot.settled()

    async def _process(self, message: QueueMessage, slot: Slot) -> None:
        try:
            request = decode_run(message.data)
        except DecodeError as error:
            oversize = isinstance(error, OversizeError)
            reason = DeadLetterReason.OVERSIZE if oversize else DeadLetterReason.DECODE_ERROR
            self._dead_end(message, slot, reason, str(error), None, salvage_ids(message.data))
            return
        spec = self.app.get(request.task)
        if spec is None:
            why = f"no task named {request.task!r} in app {self.app.name!r}"
            ids = (request.run_id, request.job)
            self._dead_end(message, slot, DeadLetterReason.UNKNOWN_TASK, why, request, ids)
            return
        attempt = message.num_delivered
        ended = self.settler.ended.get(request.run_id) if attempt > 1 else None
        if ended is not None:
            # Its ack was lost (nats-server restarted, say) after this worker reported its end:
            # running it again would end it twice.
            log.info(
                "run %s already ended %s here; acking its redelivery (attempt %d)",
                request.run_id,
                ended,
                attempt,
            )
            self.settler.ack_ended(message, ended, slot)
            return
        await self._attempt(message, request=request, spec=spec, attempt=attempt, slot=slot)

    def _dead_end(
        self,
        message: QueueMessage,
        slot: Slot,
        reason: DeadLetterReason,
        error: str,
        request: RunRequest | None,
        ids: tuple[str | None, JobRef | None],
    ) -> None:
        """Dead-letter a message that cannot run at all, report it if its run id is known (from
        ``request``, or ``ids`` salvaged from an undecodable one), and term it."""
        log.warning(
            "dead-lettering %s (seq %d): %s: %s",
            message.subject,
            message.stream_sequence,
            reason,
            error,
        )
        self.tally.dead_end(request.task if request is not None else "")
        outcome = Outcome(
            state=RunState.DEAD_LETTERED,
            disposition=Disposition.TERM,
            error=RunError(type=str(reason), message=error),
            dead_letter=reason,
        )
        run_id, job = ids
        result = None
        if run_id is not None:
            result = RunResult(
                run_id=run_id,
                attempt=max(message.num_delivered, 1),
                job=job,
                state=outcome.state,
                finished_at=_now(),
                error=outcome.error,
                worker=self.name,
                scheduled_at=request.scheduled_at if request else None,
                trigger=request.trigger if request else None,
            )
        self.settler.settle(
            message, outcome, result=result, slot=slot, request=request, dead_letter_error=error
        )

    def _replaced_before_start(
        self, message: QueueMessage, request: RunRequest, attempt: int, slot: Slot, why: str
    ) -> None:
        """``Replace``: a newer run of the Job took its Lease while this one waited. The run
        ends ``Cancelled`` (as if it had been running when the newer one came) and its message
        is terminated: it must not run after the newer run, nor stop it."""
        outcome = replaced_by(why)
        result = RunResult(
            run_id=request.run_id,
            attempt=attempt,
            job=request.job,
            state=outcome.state,
            finished_at=_now(),
            error=outcome.error,
            worker=self.name,
            scheduled_at=request.scheduled_at,
            trigger=request.trigger,
        )
        self.settler.settle(message, outcome, result=result, slot=slot, request=request)

    async def _announce(self, result: RunResult) -> None:
        """Publish the advisory ``Running`` report; the run goes on without its ack."""
        try:
            await self.client.announce_result(result, namespace=self.namespace)
        except nats.errors.Error as error:
            log.debug("the Running report of %s was not sent: %s", result.run_id, error)

    def _spawn(self, coro: Any) -> None:
        future = asyncio.ensure_future(coro)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _in_progress(self, message: QueueMessage) -> None:
        try:
            await message.in_progress()
        except nats.errors.Error as error:
            log.debug("in-progress ack failed: %s", error)

    async def _attempt(
        self,
        message: QueueMessage,
        *,
        request: RunRequest,
        spec: TaskSpec,
        attempt: int,
        slot: Slot,
    ) -> None:
        # Heartbeats start before anything slow (lease, reports) so the ack wait never runs out.
        partition = message.partition
        ack_wait = min(
            request.ack_wait_seconds, self.fetcher.ack_waits.get(partition or 0, math.inf)
        )
        interval = max(0.1, ack_wait / 3)
        heartbeats = self._beats.start(lambda: self._spawn(self._in_progress(message)), interval)
        try:
            taken = await self.locks.take(message, request, task=spec.name, attempt=attempt)
            if taken.superseded is not None:
                self._replaced_before_start(message, request, attempt, slot, taken.superseded)
            if not taken.proceed:
                return
            ended = self.settler.ended.get(request.run_id) if attempt > 1 else None
            if ended is not None:
                # The earlier attempt (here) ended while this delivery waited for the Lease.
                log.info(
                    "run %s ended %s while its redelivery waited; acking it", request.run_id, ended
                )
                self.settler.ack_ended(message, ended, slot, lock=taken.lock)
                return
            try:
                await self._run(
                    message,
                    request=request,
                    spec=spec,
                    attempt=attempt,
                    lock=taken.lock,
                    token=taken.token,
                    heartbeats=heartbeats,
                    slot=slot,
                )
            finally:
                if taken.lock is not None and not slot.handed_off:
                    taken.lock.stop_keeping()  # never settled (a bug): let the Lease run out
        finally:
            heartbeats.cancel()

    async def _run(
        self,
        message: QueueMessage,
        *,
        request: RunRequest,
        spec: TaskSpec,
        attempt: int,
        lock: JobLock | None,
        token: int | None,
        heartbeats: Heartbeats,
        slot: Slot,
    ) -> None:
        started_at = _now()
        base = {
            "run_id": request.run_id,
            "attempt": attempt,
            "job": request.job,
            "scheduled_at": request.scheduled_at,
            "trigger": request.trigger,
            "started_at": started_at,
            "fencing_token": token,
            "worker": self.name,
        }
        loop = asyncio.get_running_loop()
        if self.running_report_delay <= 0:
            await self._announce(RunResult(state=RunState.RUNNING, **base))
        else:
            heartbeats.once(
                self.running_report_delay,
                lambda: self._spawn(self._announce(RunResult(state=RunState.RUNNING, **base))),
            )
        cancel_event = CancelFlag()

        def heartbeat() -> None:
            loop.call_soon_threadsafe(self._spawn, message.in_progress())

        replaced: asyncio.Future[None] | None = None
        key = (request.job.uid, request.run_id) if request.job is not None else None
        if key is not None and request.concurrency_policy is ConcurrencyPolicy.REPLACE:
            replaced = self._replaceable[key] = loop.create_future()
        location = functools.partial(
            output_location,
            request,
            namespace=self.namespace,
            bucket=self.output_bucket,
            attempt=attempt,
            fencing_token=token,
        )
        ctx = Context(
            request=request,
            attempt=attempt,
            worker=self.name,
            fencing_token=token,
            output=OutputWriter(self.storage, location, cancelled=cancel_event.is_set),
            input_store=self.storage,
            heartbeat=heartbeat,
            cancel_event=cancel_event,
        )
        try:
            outcome = await run_attempt(
                spec,
                ctx,
                executor=self._executor,
                cancel_event=cancel_event,
                store=self.storage,
                lock=lock,
                abort=self._abort,
                replaced=replaced,
                processes=self._processes,
            )
        finally:
            heartbeats.cancel()
            if replaced is not None and key is not None:
                self._replaceable.pop(key, None)
        if outcome.abandoned is not None:
            slot.keep_for(outcome.abandoned)  # until the thread returns, whatever the settling
        elif lock is None:
            # (A run holding its Job's Lease keeps the slot until the Lease is released: the
            # next run of that Job, fetched into the slot, would only find it held and wait.)
            slot.free_early()
        self.tally.attempt(spec.name, run_id=request.run_id, attempt=attempt, outcome=outcome)
        self.settler.settle(
            message,
            outcome,
            result=RunResult(
                state=outcome.state,
                finished_at=_now(),
                outputs=outcome.outputs,
                error=outcome.error,
                **base,
            ),
            slot=slot,
            request=request,
            lock=lock,
        )


__all__ = [
    "RUNNING_REPORT_DELAY",
    "Disposition",
    "Outcome",
    "Worker",
    "classify",
    "failure",
    "run_attempt",
    "store_value",
]
