"""The worker: pulls run requests from a Queue, runs their tasks and reports the outcomes.

One :class:`Worker` serves one Queue. It binds to the Queue's partition consumers and long-polls
each with batched fetches, asking only for as many messages as it has free slots
(``concurrency``), so no message waits in a worker that cannot run it. Async tasks run on the event
loop, sync tasks in a thread pool.

For each message:

1. decode it; undecodable, oversize or unknown-task messages are copied to the dead-letter stream
   and terminated (and reported ``DeadLettered`` when the run is known);
2. for locking concurrency policies, take the Job's Lease (:mod:`kadence.leases`); if another
   attempt holds it, put the message back with a delay;
3. report ``Running`` (advisory: sent without waiting for JetStream's ack), then run the handler
   while sending in-progress acks every third of the ack wait, renewing the Lease, and enforcing
   the attempt's timeout;
4. on success write the return value, publish ``Succeeded`` with the outputs, then ack and wait
   for the server to confirm (outputs → result → ack, so a reported output always exists and an
   acked run always has a report); on failure retry with the Job's backoff (``Retrying`` + nak)
   or, when no attempts are left or the error is not retryable, copy the message to the
   dead-letter stream, report ``Failed``/``TimedOut`` and terminate it.

Attempts are numbered by JetStream's delivery count, so a crash or a kill mid-task counts as an
attempt and the redelivery continues the count. On SIGTERM the worker stops fetching, gives
running tasks ``grace_period`` seconds, then cancels the rest and puts their messages back.

:func:`run_attempt` (handler + timeout + lease watch + outcome) is shared with
:mod:`kadence.testing`, so unit tests of task code see the same semantics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import enum
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import pydantic_core
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from kadence import constants
from kadence._nats import mark_acked
from kadence.app import App, CancelFlag, CancelSignal, Context, Fail, Retry, TaskSpec
from kadence.client import (
    KadenceClient,
    Pull,
    QueueMessage,
    Slots,
    dlq_headers,
    partition_consumers,
)
from kadence.config import default_worker_name
from kadence.metrics import WorkerMetrics
from kadence.protocol import (
    ConcurrencyPolicy,
    DeadLetterReason,
    DecodeError,
    JobRef,
    OutputObject,
    OversizeError,
    RunError,
    RunRequest,
    RunResult,
    RunState,
    decode_cancel,
    decode_run,
    salvage_ids,
)
from kadence.reporting import ResultReporter
from kadence.storage import ObjectStore, OutputWriter, StorageError, output_location
from kadence.threads import TaskThreads

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock, LeaseClient

log = logging.getLogger("kadence.worker")

#: Seconds a cancelled async handler gets to unwind before it is abandoned.
_HANDLER_CLEANUP = 5.0
#: Publishing a report or confirming an ack is retried this often before giving up.
_PUBLISH_TRIES = 4
#: Longest wait at shutdown for the double acks still out: a request's timeout (5 s) per try.
_ACK_SETTLE_WAIT = 5.0 * _PUBLISH_TRIES + 3
#: An attempt still running after this many seconds is reported ``Running``; shorter ones send
#: only their final report (the operator writes a Job's status every few seconds, so a
#: ``Running`` state that short would never be seen, yet it would cost a publish per run).
RUNNING_REPORT_DELAY = 0.5
#: Seconds between the worker's INFO summaries of the attempts it finished.
SUMMARY_INTERVAL = 60.0
_MAX_ERROR_MESSAGE = 4000


class Disposition(enum.StrEnum):
    """What happens to the run message after an attempt."""

    ACK = "ack"  # done: remove it from the Queue
    NAK = "nak"  # attempt again (after ``Outcome.delay``)
    TERM = "term"  # never again (dead-lettered or replaced)
    NONE = "none"  # another worker owns the delivery now (lost Lease): leave it alone


@dataclass
class Outcome:
    """The result of one attempt, before it is reported."""

    state: RunState
    disposition: Disposition
    error: RunError | None = None
    outputs: tuple[OutputObject, ...] = ()
    value: Any = None
    #: Seconds before the next attempt (``Retrying``).
    delay: float | None = None
    #: Copy the message to the dead-letter stream with this reason before reporting.
    dead_letter: DeadLetterReason | None = None
    duration: float = 0.0
    #: A sync handler that timed out or was cancelled and is still running in its thread
    #: (resolved, on the event loop, once it returns).
    abandoned: asyncio.Future[Any] | None = field(default=None, repr=False)

    @property
    def error_text(self) -> str:
        return f"{self.error.type}: {self.error.message}" if self.error else ""


def _error_names(error: BaseException) -> set[str]:
    names: set[str] = set()
    for cls in type(error).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def _message(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text if len(text) <= _MAX_ERROR_MESSAGE else text[: _MAX_ERROR_MESSAGE - 3] + "..."


def failure(
    request: RunRequest,
    attempt: int,
    *,
    error_type: str,
    message: str,
    retryable: bool,
    delay: float | None = None,
    timed_out: bool = False,
) -> Outcome:
    """Retry with backoff while attempts remain, else fail for good (and dead-letter)."""
    if retryable and attempt < request.retry.max_attempts:
        return Outcome(
            state=RunState.RETRYING,
            disposition=Disposition.NAK,
            error=RunError(type=error_type, message=message, retryable=True),
            delay=delay if delay is not None else request.retry.backoff.delay(attempt),
        )
    return Outcome(
        state=RunState.TIMED_OUT if timed_out else RunState.FAILED,
        disposition=Disposition.TERM,
        error=RunError(type=error_type, message=message, retryable=False),
        dead_letter=DeadLetterReason.MAX_ATTEMPTS if retryable else DeadLetterReason.NON_RETRYABLE,
    )


def classify(error: BaseException, *, request: RunRequest, attempt: int) -> Outcome:
    """The outcome of a handler that raised ``error``."""
    if isinstance(error, Retry):
        return failure(
            request,
            attempt,
            error_type="Retry",
            message=error.message,
            retryable=True,
            delay=error.delay,
        )
    if isinstance(error, Fail):
        return failure(
            request,
            attempt,
            error_type=error.error_type or type(error).__name__,
            message=error.message,
            retryable=False,
        )
    non_retryable = bool(_error_names(error) & set(request.retry.non_retryable_errors))
    return failure(
        request,
        attempt,
        error_type=type(error).__name__,
        message=_message(error),
        retryable=not non_retryable,
    )


def store_value(value: Any, output: OutputWriter) -> None:
    """Write a task's return value: ``result.bin`` for bytes, else ``result.json``."""
    if value is None:
        return
    if isinstance(value, bytes | bytearray | memoryview):
        output.put(
            constants.RESULT_BINARY_OBJECT, bytes(value), content_type="application/octet-stream"
        )
        return
    try:
        data = pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError as error:
        raise Fail(
            f"the return value cannot be stored as JSON: {error}",
            error_type="ResultNotSerializable",
        ) from None
    output.put(constants.RESULT_JSON_OBJECT, data, content_type="application/json")


async def _stop_handler(handler: asyncio.Future[Any]) -> None:
    handler.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(handler), _HANDLER_CLEANUP)


async def _first_done(
    handler: asyncio.Future[Any],
    watchers: dict[asyncio.Future[Any], str],
    timeout: float | None,  # noqa: ASYNC109 -- the attempt's own timeout, not an API argument
) -> set[asyncio.Future[Any]]:
    """``asyncio.wait(..., return_when=FIRST_COMPLETED)`` for one handler and its watchers.

    The same, without the sets, type checks and per-future bookkeeping of ``asyncio.wait``: this
    runs once per attempt, and attempts of short tasks are what a busy worker does most.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    handler.add_done_callback(wake)
    for watcher in watchers:
        watcher.add_done_callback(wake)
    timer = loop.call_later(timeout, wake) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        handler.remove_done_callback(wake)
        for watcher in watchers:
            watcher.remove_done_callback(wake)
    return {f for f in (handler, *watchers) if f.done()}


async def run_attempt(
    spec: TaskSpec,
    ctx: Context,
    *,
    executor: TaskThreads | None,
    cancel_event: CancelSignal,
    store: ObjectStore | None,
    lock: JobLock | None = None,
    abort: asyncio.Future[Any] | None = None,
    replaced: asyncio.Future[Any] | None = None,
) -> Outcome:
    """Run one attempt of ``spec`` to an :class:`Outcome`; never raises for task errors.

    The handler is stopped by the attempt's timeout, by the loss of the Lease (``lock``), by
    ``replaced`` (the operator's cancel request for this run, ``concurrencyPolicy: Replace``) or
    by ``abort`` (worker shutdown: one future shared by all attempts, which this function only
    watches and never cancels). An async handler is cancelled; a sync one cannot be interrupted,
    so ``cancel_event`` is set (SDK calls then raise ``Cancelled``) and its future is returned as
    ``abandoned``.
    """
    request, attempt = ctx.request, ctx.attempt
    started = time.monotonic()

    def done(outcome: Outcome) -> Outcome:
        outcome.duration = time.monotonic() - started
        return outcome

    try:
        args, kwargs = spec.call_arguments(request.payload, ctx)
    except Exception as error:  # an invalid payload or an unresolvable annotation: never retried
        return done(
            failure(
                request,
                attempt,
                error_type=getattr(error, "error_type", None) or type(error).__name__,
                message=_message(error),
                retryable=False,
            )
        )

    if spec.is_async:
        handler: asyncio.Future[Any] = asyncio.ensure_future(spec.fn(*args, **kwargs))
    else:
        if executor is None:
            raise RuntimeError("sync tasks need an executor")
        call = functools.partial(contextvars.copy_context().run, spec.fn, *args, **kwargs)
        handler = executor.submit(call)

    watchers: dict[asyncio.Future[Any], str] = {}
    keeper: asyncio.Future[Any] | None = None
    if lock is not None:
        keeper = asyncio.ensure_future(lock.keep())
        watchers[keeper] = "lease"
    if replaced is not None:
        watchers[replaced] = "replaced"
    if abort is not None:
        watchers[abort] = "shutdown"  # shared: watched, never cancelled here
    try:
        finished = await _first_done(handler, watchers, request.timeout_seconds)
    except asyncio.CancelledError:
        cancel_event.set()
        handler.cancel()
        raise
    finally:
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    if handler not in finished:
        cancel_event.set()
        fired = next((w for w in watchers if w in finished), None)
        if spec.is_async:
            await _stop_handler(handler)
        # A sync handler's future is left alone: it resolves once the thread returns.
        abandoned = handler if not spec.is_async and not handler.done() else None
        outcome = _interrupted(
            request, attempt=attempt, why=watchers.get(fired) if fired else None, watcher=fired
        )
        outcome.abandoned = abandoned
        return done(outcome)

    if handler.cancelled():
        return done(
            failure(
                request,
                attempt,
                error_type="Cancelled",
                message="the handler was cancelled",
                retryable=True,
            )
        )
    if (raised := handler.exception()) is not None:
        if not isinstance(raised, Retry | Fail):
            ctx.logger.warning(
                "task %s raised %s", spec.name, type(raised).__name__, exc_info=raised
            )
        return done(classify(raised, request=request, attempt=attempt))

    value = handler.result()
    if lock is not None:
        from kadence.leases import LeaseError, LeaseLost

        try:
            # A holder paused past its lease (GC, SIGSTOP, partition) may have been replaced:
            # check before writing anything that the newer holder might also write.
            await lock.averify()
        except LeaseLost as error:
            return done(_lease_lost(str(error)))
        except LeaseError as error:
            log.warning("could not verify lease %s before reporting: %s", lock.name, error)
    try:
        if store is not None and value is not None:  # None stores nothing: no thread hop
            await asyncio.to_thread(store_value, value, ctx.output)
    except Fail as error:
        return done(classify(error, request=request, attempt=attempt))
    except StorageError as error:
        return done(
            failure(
                request,
                attempt,
                error_type=type(error).__name__,
                message=_message(error),
                retryable=True,
            )
        )
    return done(
        Outcome(
            state=RunState.SUCCEEDED,
            disposition=Disposition.ACK,
            outputs=ctx.output.objects,
            value=value,
        )
    )


def _lease_lost(message: str) -> Outcome:
    # Not final: the newer holder runs it. The report carries this holder's (stale) fencing
    # token and the message is left to that holder, neither acked nor nak'ed.
    return Outcome(
        state=RunState.RETRYING,
        disposition=Disposition.NONE,
        error=RunError(type="LeaseLost", message=message, retryable=True),
    )


def _interrupted(
    request: RunRequest, *, attempt: int, why: str | None, watcher: asyncio.Future[Any] | None
) -> Outcome:
    if why is None:
        return failure(
            request,
            attempt,
            error_type="TimedOut",
            message=f"the attempt exceeded its {request.timeout_seconds:g}s timeout",
            retryable=True,
            timed_out=True,
        )
    if why == "shutdown":
        # Reported as Retrying, not Cancelled (which ends a run): another worker picks it up.
        return Outcome(
            state=RunState.RETRYING,
            disposition=Disposition.NAK,
            error=RunError(type="WorkerShutdown", message="the worker shut down", retryable=True),
        )
    if why == "replaced":
        return _replaced("the operator's cancel request")
    from kadence.leases import LeasePreempted

    error = watcher.exception() if watcher is not None and not watcher.cancelled() else None
    if isinstance(error, LeasePreempted):
        return _replaced(error.by)
    return _lease_lost(str(error) if error else "the lease was lost")


def _replaced(by: str) -> Outcome:
    """``concurrencyPolicy: Replace`` stopped the attempt: the run ends ``Cancelled``."""
    return Outcome(
        state=RunState.CANCELLED,
        disposition=Disposition.TERM,
        error=RunError(type="Replaced", message=f"replaced by a newer run ({by})", retryable=False),
    )


def _now() -> datetime:
    return datetime.now(UTC)


#: How often :class:`_Beats` looks for heartbeats and deferred reports that are due (seconds);
#: each fires up to this much late.
_BEAT_TICK = 0.05


class _Beats:
    """The heartbeats of all running attempts, on one timer.

    An attempt's heartbeat (its in-progress ack every ``interval`` seconds) and its deferred
    ``Running`` report are entries here, checked every :data:`_BEAT_TICK` seconds while there
    are any. Most attempts end before either is due, and adding an entry to a set and removing
    it costs a busy worker much less than the event-loop timer per attempt it replaces.
    """

    __slots__ = ("_entries", "_timer")

    def __init__(self) -> None:
        self._entries: set[_Heartbeats] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, beat: Callable[[], None], interval: float) -> _Heartbeats:
        """Call ``beat`` every ``interval`` seconds until the entry is cancelled."""
        loop = asyncio.get_running_loop()
        entry = _Heartbeats(self, beat, interval, loop.time() + interval)
        self._entries.add(entry)
        if self._timer is None:
            self._timer = loop.call_later(_BEAT_TICK, self._tick)
        return entry

    def _remove(self, entry: _Heartbeats) -> None:
        self._entries.discard(entry)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for entry in list(self._entries):
            entry.fire_due(now)
        self._timer = loop.call_later(_BEAT_TICK, self._tick) if self._entries else None


class _Heartbeats:
    """One attempt's entry in :class:`_Beats`: its heartbeat and an optional one-shot call
    (the deferred ``Running`` report), both ended by :meth:`cancel`."""

    __slots__ = ("_beat", "_due", "_interval", "_once", "_once_at", "_owner")

    def __init__(
        self, owner: _Beats, beat: Callable[[], None], interval: float, due: float
    ) -> None:
        self._owner = owner
        self._beat = beat
        self._interval = interval
        self._due = due
        self._once: Callable[[], None] | None = None
        self._once_at = 0.0

    def once(self, delay: float, call: Callable[[], None]) -> None:
        """Call ``call`` after ``delay`` seconds unless cancelled first."""
        self._once = call
        self._once_at = asyncio.get_running_loop().time() + delay

    def fire_due(self, now: float) -> None:
        if self._once is not None and now >= self._once_at:
            call, self._once = self._once, None
            call()
        if now >= self._due:
            self._due = now + self._interval
            self._beat()

    def cancel(self) -> None:
        self._once = None
        self._owner._remove(self)


class _Slot:
    """One message's concurrency slot, given back exactly once.

    The slot is given back as soon as the handler ends (:meth:`free_early`), so the reports and
    the ack of a finished run never keep the worker from fetching the next one. At most
    ``Worker.settle_limit`` finished runs settle (report and ack) at once; past that a run keeps
    its slot until it is settled, so a slow results stream slows fetching instead of piling up
    runs.
    """

    __slots__ = ("_early", "_given", "_worker", "handed_off")

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._given = False
        self._early = False
        #: The run's report and ack go on without its task (:meth:`Worker._settle_later`),
        #: which settles the slot in the end.
        self.handed_off = False

    def free_early(self) -> None:
        """The handler has ended: free the slot now if the settle backlog allows it."""
        worker = self._worker
        if not self._given and worker._settling < worker.settle_limit:
            worker._settling += 1
            self._given = self._early = True
            worker._slots.give(1)

    def settled(self) -> None:
        """The message is settled (or left alone): give the slot back if still held."""
        if self._early:
            self._early = False
            self._worker._settling -= 1
        elif not self._given:
            self._given = True
            self._worker._slots.give(1)

    @property
    def held(self) -> bool:
        return not self._given


class _Settle:
    """A finished run on its way through :meth:`Worker._settle_later`."""

    __slots__ = ("message", "result", "slot", "tries", "worker")

    def __init__(self, worker: Worker, message: QueueMessage, result: RunResult, slot: _Slot):
        self.worker = worker
        self.message = message
        self.result = result
        self.slot = slot
        #: Ack requests sent so far that were not confirmed.
        self.tries = 0

    def __call__(self, error: BaseException | None) -> None:
        """The reporter's callback: the result is stored, or failed to be."""
        self.worker._stored(self, error)

    def acked(self, reply: Msg | None, error: BaseException | None) -> None:
        """The reply inbox's callback: the ack is confirmed, or failed to be."""
        self.worker._acked(self, reply, error)


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
        self.fetch_timeout = fetch_timeout
        self.max_batch = max_batch
        self.partition_refresh = partition_refresh
        #: Finished runs that may be reporting and acking at once without holding a slot.
        self.settle_limit = settle_limit if settle_limit is not None else max(16, 4 * concurrency)
        self.running_report_delay = running_report_delay
        self.summary_interval = summary_interval
        #: Attempts finished since the last summary, by reported state.
        self._finished: collections.Counter[str] = collections.Counter()
        self._summary_at = time.monotonic()
        self._settling = 0
        #: Runs handed to :meth:`_settle_later` and not settled yet, and an event set whenever
        #: there are none.
        self._unsettled = 0
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._acks_due: list[_Settle] = []
        self._beats = _Beats()
        #: Set once the worker is bound to the Queue's partitions and fetching.
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        #: Resolved when the grace period is over: every running attempt watches this one future.
        self._abort: asyncio.Future[None] | None = None
        self._slots = Slots(concurrency)
        self._loops: dict[int, asyncio.Task[None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._executor: TaskThreads | None = None
        #: The shortest redelivery deadline of each partition consumer (ack wait or backoff).
        self._ack_waits: dict[int, float] = {}
        self.abandoned = 0
        self._metric_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        #: (Job uid, run id) -> resolved when the operator asks to cancel that running attempt.
        self._replaceable: dict[tuple[str, str], asyncio.Future[None]] = {}
        # Read when scraped: no gauge update per message.
        self.metrics.in_flight.set_function(lambda: len(self._inflight) + self._unsettled)
        #: Final reports, coalesced per Job while one is in flight (see kadence.reporting).
        self.reporter = ResultReporter(
            lambda subject, payload, msg_id: client.publish_report(subject, payload, msg_id=msg_id),
            subject=lambda result: client.result_subject(result, self.namespace),
            tries=_PUBLISH_TRIES,
            observe=self.metrics.report_batch_size.observe,
        )

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
        return sorted(self._loops)

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (safe to call from a signal handler)."""
        self._stopping.set()

    # -- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the Queue until :meth:`stop`; then drain within the grace period."""
        self._abort = asyncio.get_running_loop().create_future()
        self._executor = TaskThreads(self.concurrency, name=f"kadence-{self.queue}")
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
        refresher = asyncio.create_task(self._refresh_partitions())
        summaries = asyncio.create_task(self._summaries())
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

    async def _summaries(self) -> None:
        """Every ``summary_interval`` seconds, log at INFO what the attempts since then did.

        A line per attempt would cost a busy worker more than short tasks do; successful
        attempts are logged one by one at DEBUG only (failures and retries at WARNING).
        """
        while True:
            await asyncio.sleep(self.summary_interval)
            self._summarize()

    def _summarize(self) -> None:
        finished, self._finished = self._finished, collections.Counter()
        now = time.monotonic()
        since, self._summary_at = self._summary_at, now
        if finished:
            log.info(
                "%d attempt(s) finished in the last %.0fs (%s); %d in flight",
                finished.total(),
                now - since,
                ", ".join(f"{n} {state}" for state, n in sorted(finished.items())),
                len(self._inflight),
            )

    async def _refresh_partitions(self) -> None:
        """Bind to the Queue's partition consumers, and to new ones as the Queue grows."""
        waited = 0.0
        while not self._stopping.is_set():
            try:
                consumers = await self.js.consumers_info(self.stream)
                found = partition_consumers([c.name for c in consumers if c.name])
            except nats.js.errors.NotFoundError:
                found = []
            except (nats.errors.Error, TimeoutError) as error:
                log.warning("listing consumers of %s failed: %s", self.stream, error)
                found = []
            new = [p for p in found if p not in self._loops]
            for partition in new:
                self._loops[partition] = asyncio.create_task(self._fetch_loop(partition))
            if new:
                log.info("fetching from %s partition(s) %s", self.stream, new)
            if self._loops:
                self.ready.set()
                delay = self.partition_refresh
            else:
                if waited % 30 == 0:
                    log.info("waiting for stream %s and its partition consumers", self.stream)
                delay = 1.0
                waited += delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _fetch_loop(self, partition: int) -> None:
        consumer = constants.consumer_name(partition)
        puller = Pull(
            self.client.nc,
            stream=self.stream,
            consumer=consumer,
            deliver=self._dispatch,
            extra=lambda msg: self._spawn(self._put_back(msg)),
        )
        await puller.start()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            # Heartbeats must beat the consumer's real deadline, which a backoff list shortens,
            # whatever the run request claims.
            config = (await self.js.consumer_info(self.stream, consumer)).config
            self._ack_waits[partition] = min([config.ack_wait or 30.0, *(config.backoff or [])])
        try:
            while not self._stopping.is_set():
                wanted = await self._slots.take(self.max_batch)
                if wanted == 0:
                    break
                # With other partitions waiting for a slot, poll briefly and hand the slot on;
                # otherwise long-poll so an idle worker costs one request per fetch_timeout.
                timeout = (
                    min(1.0, self.fetch_timeout) if self._slots.waiting else self.fetch_timeout
                )
                if puller.max_batch is not None and wanted > puller.max_batch:
                    self._slots.give(wanted - puller.max_batch)  # the consumer's own limit
                    wanted = puller.max_batch
                error: Exception | None = None
                try:
                    await puller.pull(wanted, expires=timeout)
                except (nats.errors.Error, ValueError) as failed:
                    error = failed
                finally:
                    # Each message delivered took its slot along; give back the rest.
                    self._slots.give(wanted - puller.got)
                if error is not None:
                    # Nobody answers a pull for a deleted consumer; check that this is why.
                    if (
                        isinstance(
                            error, nats.js.errors.NotFoundError | nats.errors.NoRespondersError
                        )
                        and (await self._consumer_exists(consumer)) is False
                    ):
                        log.warning(
                            "consumer %s of %s is gone; stopping its loop", consumer, self.stream
                        )
                        self._loops.pop(partition, None)
                        return
                    log.warning("fetching from %s/%s failed: %s", self.stream, consumer, error)
                    await asyncio.sleep(1.0)
                elif puller.conflict and not puller.got:
                    # The server refused the request (a leadership change, a limit of the
                    # consumer): do not ask again in a tight loop.
                    log.warning("pulling from %s/%s: %s", self.stream, consumer, puller.conflict)
                    await asyncio.sleep(1.0)
        finally:
            await puller.stop()

    async def _consumer_exists(self, consumer: str) -> bool | None:
        """Whether the partition consumer exists; None when JetStream cannot say now."""
        try:
            await self.js.consumer_info(self.stream, consumer)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError):
            return None
        return True

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
        loops = list(self._loops.values())
        # Fetches in flight end within fetch_timeout; what they bring back is put back.
        _, pending = (
            await asyncio.wait(loops, timeout=self.fetch_timeout + 2) if loops else ((), ())
        )
        for loop in pending:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._inflight:
            _, still = await asyncio.wait(set(self._inflight), timeout=self.grace_period)
            if still:
                log.warning("grace period over: cancelling %d task(s)", len(still))
                if self._abort is not None and not self._abort.done():
                    self._abort.set_result(None)
                await asyncio.wait(still, timeout=_HANDLER_CLEANUP + 10)
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reporter.aclose(), timeout=10)
        if self._unsettled:
            # Their acks are out (or being retried): wait for the confirmations.
            self._all_settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), timeout=_ACK_SETTLE_WAIT)
        if self._executor is not None:
            self._executor.shutdown()
        self._summarize()
        log.info("worker %s stopped", self.name)

    # -- one message ---------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        slot = _Slot(self)
        abandoned: asyncio.Future[Any] | None = None
        try:
            abandoned = await self._process(QueueMessage(msg, self.client.requests), slot)
        except Exception:
            # The worker must survive anything a message does; put it back and go on.
            log.exception("unexpected error handling a message from %s", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)
        finally:
            if abandoned is not None and not abandoned.done() and slot.held:
                # A sync task that cannot be interrupted still occupies its thread: keep its slot
                # until it really ends, so the worker never runs more than `concurrency` threads.
                self.abandoned += 1
                abandoned.add_done_callback(self._release_abandoned)
            elif not slot.handed_off:
                slot.settled()

    def _task_metrics(self, task: str, state: RunState) -> tuple[Any, Any]:
        """The duration histogram and outcome counter of ``(task, state)``, looked up once."""
        key = (task, state.value)
        children = self._metric_children.get(key)
        if children is None:
            children = self._metric_children[key] = (
                self.metrics.task_duration.labels(*key),
                self.metrics.outcomes.labels(*key),
            )
        return children

    def _release_abandoned(self, _: asyncio.Future[Any]) -> None:
        self.abandoned -= 1
        self._slots.give(1)

    async def _process(self, message: QueueMessage, slot: _Slot) -> asyncio.Future[Any] | None:
        attempt = message.num_delivered
        try:
            request = decode_run(message.data)
        except DecodeError as error:
            reason = (
                DeadLetterReason.OVERSIZE
                if isinstance(error, OversizeError)
                else DeadLetterReason.DECODE_ERROR
            )
            run_id, job = salvage_ids(message.data)
            await self._dead_end(
                message,
                reason=reason,
                error=str(error),
                run_id=run_id,
                job=job,
                attempt=attempt,
                request=None,
                task="",
            )
            return None
        spec = self.app.get(request.task)
        if spec is None:
            await self._dead_end(
                message,
                reason=DeadLetterReason.UNKNOWN_TASK,
                error=f"no task named {request.task!r} in app {self.app.name!r}",
                run_id=request.run_id,
                job=request.job,
                attempt=attempt,
                request=request,
                task=request.task,
            )
            return None
        return await self._attempt(message, request=request, spec=spec, attempt=attempt, slot=slot)

    async def _dead_end(
        self,
        message: QueueMessage,
        *,
        reason: DeadLetterReason,
        error: str,
        run_id: str | None,
        job: JobRef | None,
        attempt: int,
        request: RunRequest | None,
        task: str,
    ) -> None:
        """Dead-letter a message that cannot run at all, report it if the run is known, term."""
        log.warning(
            "dead-lettering %s (seq %d): %s: %s",
            message.subject,
            message.stream_sequence,
            reason,
            error,
        )
        if not await self._dead_letter(message, reason=reason, error=error, request=request):
            await message.nak(delay=5.0)
            return
        if run_id is not None:
            await self._report(
                RunResult(
                    run_id=run_id,
                    attempt=max(attempt, 1),
                    job=job,
                    state=RunState.DEAD_LETTERED,
                    finished_at=_now(),
                    error=RunError(type=str(reason), message=error),
                    worker=self.name,
                    scheduled_at=request.scheduled_at if request else None,
                )
            )
        self.metrics.outcomes.labels(task, RunState.DEAD_LETTERED.value).inc()
        await message.term()

    async def _dead_letter(
        self,
        message: QueueMessage,
        *,
        reason: DeadLetterReason,
        error: str,
        request: RunRequest | None,
    ) -> bool:
        """Copy the message to the Queue's DLQ; False if it could not be stored (try later)."""
        subject = (request.dlq_subject if request is not None else None) or constants.dlq_subject(
            self.namespace, self.queue
        )
        headers = dlq_headers(
            reason=reason,
            subject=message.subject,
            deliveries=message.num_delivered,
            error=error,
            stream=message.stream,
            stream_sequence=message.stream_sequence,
            original=message.headers,
        )
        self.metrics.dead_letters.labels(str(reason)).inc()
        for attempt in range(_PUBLISH_TRIES):
            try:
                await self.js.publish(subject, message.data, headers=headers)
                return True
            except nats.js.errors.NoStreamResponseError:
                # No DLQ stream: the Queue has dead-lettering disabled, so the message is dropped.
                log.info("no dead-letter stream for %s; dropping the message", subject)
                return True
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("copying to the dead-letter stream failed (%s); retrying", exc)
                await asyncio.sleep(0.5 * 2**attempt)
        return False

    async def _report(self, result: RunResult) -> bool:
        """Publish a run result (the reporter retries briefly); False if NATS would not take it."""
        try:
            await self.reporter.report(result)
        except (nats.errors.Error, TimeoutError) as error:
            log.warning(
                "the %s result of %s was not stored (%s)", result.state, result.run_id, error
            )
            return False
        return True

    async def _announce(self, result: RunResult) -> None:
        """Publish the advisory ``Running`` report; the run goes on without its ack."""
        try:
            await self.client.announce_result(result, namespace=self.namespace)
        except nats.errors.Error as error:
            log.debug("the Running report of %s was not sent: %s", result.run_id, error)

    async def _ack(self, message: QueueMessage) -> None:
        for attempt in range(_PUBLISH_TRIES):
            try:
                await message.ack_sync()
                return
            except (nats.errors.Error, TimeoutError) as error:
                log.warning("ack of %s not confirmed (%s); retrying", message.subject, error)
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("ack of %s never confirmed; the run may be redelivered", message.subject)

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
        slot: _Slot,
    ) -> asyncio.Future[Any] | None:
        # Heartbeats start before anything slow (lease, reports) so the ack wait never runs out.
        partition = message.partition
        ack_wait = min(request.ack_wait_seconds, self._ack_waits.get(partition or 0, math.inf))
        interval = max(0.1, ack_wait / 3)
        heartbeats = self._beats.start(lambda: self._spawn(self._in_progress(message)), interval)
        try:
            proceed, lock, token = await self._lock(
                message, request=request, spec=spec, attempt=attempt
            )
            if not proceed:
                return None
            return await self._run(
                message,
                request=request,
                spec=spec,
                attempt=attempt,
                lock=lock,
                token=token,
                heartbeats=heartbeats,
                slot=slot,
            )
        finally:
            heartbeats.cancel()

    async def _lock(
        self, message: QueueMessage, *, request: RunRequest, spec: TaskSpec, attempt: int
    ) -> tuple[bool, JobLock | None, int | None]:
        """``(proceed, lock, token)``: take the Job's Lease if the policy needs one.

        ``proceed`` is False when the message was put back (another attempt holds the Lease).
        """
        if not request.concurrency_policy.needs_lock or request.job is None:
            return True, None, None
        from kadence.leases import LeaseError, LeaseHeld

        if self.leases is None:
            log.error(
                "run %s of Job %s/%s needs a Lease (concurrencyPolicy %s) but this worker "
                "has no Kubernetes access (KUBECONFIG or in-cluster)",
                request.run_id,
                request.job.namespace,
                request.job.name,
                request.concurrency_policy,
            )
            await message.nak(delay=float(self.lease_duration))
            return False, None, None
        lock = self.leases.lock(
            namespace=request.job.namespace,
            job=request.job.name,
            holder=f"{self.name}/{request.run_id}/{attempt}",
            duration=self.lease_duration,
        )
        try:
            token = await lock.aacquire()
        except LeaseHeld as held:
            self.metrics.lease_waits.labels(spec.name).inc()
            delay = min(max(held.remaining, 1.0), float(self.lease_duration))
            replace = request.concurrency_policy is ConcurrencyPolicy.REPLACE
            if replace and await self._preempt(lock):
                delay = min(delay, max(1.0, lock.renew_interval))
            log.info("run %s waits %.1fs: %s", request.run_id, delay, held)
            await message.nak(delay=delay)
            return False, None, None
        except LeaseError as error:
            log.warning("could not take lease %s: %s", lock.name, error)
            await message.nak(delay=2.0)
            return False, None, None
        return True, lock, token

    async def _preempt(self, lock: JobLock) -> bool:
        from kadence.leases import LeaseError

        try:
            return await lock.apreempt()
        except LeaseError as error:
            log.warning("could not ask the holder of %s to stop: %s", lock.name, error)
            return False

    async def _run(
        self,
        message: QueueMessage,
        *,
        request: RunRequest,
        spec: TaskSpec,
        attempt: int,
        lock: JobLock | None,
        token: int | None,
        heartbeats: _Heartbeats,
        slot: _Slot,
    ) -> asyncio.Future[Any] | None:
        started_at = _now()
        base = {
            "run_id": request.run_id,
            "attempt": attempt,
            "job": request.job,
            "scheduled_at": request.scheduled_at,
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
            output_location, request, namespace=self.namespace, bucket=self.output_bucket
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
            )
        finally:
            heartbeats.cancel()
            if replaced is not None and key is not None:
                self._replaceable.pop(key, None)
        if outcome.abandoned is None and lock is None:
            # (A run holding its Job's Lease keeps the slot until the Lease is released: the
            # next run of that Job, fetched into the slot, would only find it held and wait.)
            slot.free_early()
        duration, outcomes = self._task_metrics(spec.name, outcome.state)
        duration.observe(outcome.duration)
        outcomes.inc()
        if outcome.state is RunState.RETRYING:
            self.metrics.retries.labels(spec.name).inc()
        self._finished[outcome.state] += 1
        log.log(
            logging.DEBUG if outcome.state is RunState.SUCCEEDED else logging.WARNING,
            "run %s attempt %d of %s: %s in %.2fs%s",
            request.run_id,
            attempt,
            spec.name,
            outcome.state,
            outcome.duration,
            f" ({outcome.error_text})" if outcome.error else "",
        )

        if outcome.dead_letter is not None and not await self._dead_letter(
            message, reason=outcome.dead_letter, error=outcome.error_text, request=request
        ):
            await message.nak(delay=5.0)
            await self._release(lock)
            return outcome.abandoned
        result = RunResult(
            state=outcome.state,
            finished_at=_now(),
            outputs=outcome.outputs,
            error=outcome.error,
            **base,
        )
        if outcome.disposition is Disposition.ACK and lock is None and outcome.abandoned is None:
            # The common case, and what a busy worker does thousands of times a second: the
            # report and the double ack go on in callbacks, without this task. (An abandoned
            # sync handler keeps its slot until its thread ends: that path stays below.)
            self._settle_later(message, result, slot)
            return None
        reported = await self._report(result)
        match outcome.disposition:
            case Disposition.ACK if reported:
                await self._ack(message)
            case Disposition.ACK:
                # Never ack a run nobody heard about: run it again rather than lose the report.
                await message.nak(delay=2.0)
            case Disposition.NAK:
                await message.nak(delay=outcome.delay)
            case Disposition.TERM:
                await message.term()
            case Disposition.NONE:
                pass
        await self._release(lock)
        return outcome.abandoned

    # -- report, then double ack, in callbacks ----------------------------------------------------

    def _settle_later(self, message: QueueMessage, result: RunResult, slot: _Slot) -> None:
        """Report ``result``, then ack ``message`` once it is stored; then settle ``slot``.

        What ``_report`` and ``_ack`` do, in the same order and with the same retries, on
        callbacks: the reporter's when the result's message is stored, and the reply inbox's
        when the ack is confirmed. The acks of the runs whose results were stored together are
        written together.
        """
        slot.handed_off = True
        self._unsettled += 1
        self.reporter.submit(result, _Settle(self, message, result, slot))

    def _stored(self, settle: _Settle, error: BaseException | None) -> None:
        if error is None:
            self._queue_ack(settle)
            return
        result = settle.result
        log.warning("the %s result of %s was not stored (%s)", result.state, result.run_id, error)
        # Never ack a run nobody heard about: run it again rather than lose the report.
        self._spawn(self._put_back_settled(settle))

    async def _put_back_settled(self, settle: _Settle) -> None:
        try:
            with contextlib.suppress(nats.errors.Error):
                await settle.message.nak(delay=2.0)
        finally:
            self._settled(settle)

    def _queue_ack(self, settle: _Settle) -> None:
        self._acks_due.append(settle)
        if len(self._acks_due) == 1:
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        due, self._acks_due = self._acks_due, []
        requests = []
        for settle in due:
            reply = settle.message.msg.reply
            if not reply:  # not a JetStream message: nothing to ack (never from a Queue)
                self._settled(settle)
                continue
            requests.append((reply, b"", settle.acked))  # an empty request is "+ACK"
        self.client.requests.send_now(requests)

    def _acked(self, settle: _Settle, reply: Msg | None, error: BaseException | None) -> None:
        if error is None and reply is not None and (reply.headers or {}).get("Status") == "503":
            error = nats.errors.NoRespondersError()
        message = settle.message
        if error is None:
            mark_acked(message.msg)  # what nats-py's own ack_sync records
            self._settled(settle)
            return
        settle.tries += 1
        if settle.tries < _PUBLISH_TRIES:
            log.warning("ack of %s not confirmed (%s); retrying", message.subject, error)
            asyncio.get_running_loop().call_later(
                0.2 * 2 ** (settle.tries - 1), self._queue_ack, settle
            )
            return
        log.error("ack of %s never confirmed; the run may be redelivered", message.subject)
        self._settled(settle)

    def _settled(self, settle: _Settle) -> None:
        settle.slot.settled()
        self._unsettled -= 1
        if not self._unsettled:
            self._all_settled.set()

    async def _release(self, lock: JobLock | None) -> None:
        if lock is None:
            return
        from kadence.leases import LeaseError

        try:
            await lock.arelease()
        except LeaseError as error:
            # It expires on its own after lease_duration; the next run just waits that long.
            log.warning("releasing lease %s failed: %s", lock.name, error)


__all__ = [
    "Disposition",
    "Outcome",
    "Worker",
    "classify",
    "failure",
    "run_attempt",
    "store_value",
]
