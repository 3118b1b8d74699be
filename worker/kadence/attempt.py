"""One attempt of a task: run the handler to an :class:`~kadence.outcomes.Outcome`.

:func:`run_attempt` calls the handler (an async one on the event loop, a sync one in the
worker's thread pool, or for ``isolation="process"`` in a child process waited for from that
pool), stops it on the attempt's timeout, on the loss of the Job's Lease, on the
operator's cancel request (``concurrencyPolicy: Replace``) or on the worker's shutdown, and
stores its return value (:func:`store_value`). It never raises for task errors: what the attempt
came to is an ``Outcome``, classified by :mod:`kadence.outcomes`.

Shared by the worker (:mod:`kadence.runtime`) and :mod:`kadence.testing`, so unit tests of task
code see the same semantics. Reporting the outcome and acking the message are the worker's
(:mod:`kadence.settling`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import pydantic_core

from kadence import constants, outcomes
from kadence.app import CancelSignal, Context, Fail, Isolation, Retry, TaskSpec
from kadence.outcomes import Disposition, Outcome, classify, error_message, failure
from kadence.protocol import RunRequest, RunState
from kadence.storage import ObjectStore, OutputWriter, StorageError
from kadence.threads import TaskThreads

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock
    from kadence.processes import Call, TaskProcesses

log = logging.getLogger("kadence.worker")

#: Seconds a cancelled async handler gets to unwind before it is abandoned.
HANDLER_CLEANUP = 5.0
#: Seconds between tries to verify the Job's Lease before a final report, while unreachable.
VERIFY_RETRY_SECONDS = 0.5


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
        await asyncio.wait_for(asyncio.shield(handler), HANDLER_CLEANUP)


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
    processes: TaskProcesses | None = None,
) -> Outcome:
    """Run one attempt of ``spec`` to an :class:`Outcome`; never raises for task errors.

    The handler is stopped by the attempt's timeout, by the loss of the Lease (``lock``), by
    ``replaced`` (the operator's cancel request for this run, ``concurrencyPolicy: Replace``) or
    by ``abort`` (worker shutdown: one future shared by all attempts, which this function only
    watches and never cancels). An async handler is cancelled; a sync one cannot be interrupted,
    so ``cancel_event`` is set (SDK calls then raise ``Cancelled``) and its future is returned as
    ``abandoned``. A sync handler of an ``isolation="process"`` task runs in one of
    ``processes``' children, which is stopped (SIGTERM, SIGKILL after its grace); its future is
    ``abandoned`` until the child is gone. Without ``processes`` (:mod:`kadence.testing`) such a
    handler runs in a thread like any other.

    With a ``lock``, an outcome that would end the run is reported only by the Lease's holder:
    the hold is verified (renewed) after the return value is stored and before anything is
    reported. A holder paused past its Lease (GC, SIGSTOP, a partition) and replaced by a newer
    attempt finds out there, and its outcome becomes :func:`~kadence.outcomes.lease_lost`: its
    outputs stay in its own attempt's folder, and the run's result is the newer holder's.
    """
    outcome = await _handle(
        spec,
        ctx,
        executor=executor,
        cancel_event=cancel_event,
        store=store,
        lock=lock,
        abort=abort,
        replaced=replaced,
        processes=processes,
    )
    if lock is not None:
        lock.attempt_ended()  # held, whoever asks for it, until the report and ack are through
        if outcome.state not in (RunState.RETRYING, RunState.RUNNING):
            return await _fenced(outcome, lock)
    return outcome


async def _fenced(outcome: Outcome, lock: JobLock) -> Outcome:
    """``outcome``, or :func:`~kadence.outcomes.lease_lost` unless ``lock`` is verified held.

    An API server this worker cannot reach (a partition of its own, a 429 storm) makes the hold
    unknown: verifying is retried until the hold would have run out by this worker's clock, as
    the renewals are. Past that another worker may have taken the Lease and be running the run
    again, so this outcome is not reported: reported anyway, it reached the results stream after
    that attempt's own (soak seed 3), two final states for one run.
    """
    from kadence.leases import LeaseError, LeaseLost

    while True:
        try:
            await lock.averify()
            return outcome
        except LeaseLost as error:
            why = str(error)
        except LeaseError as error:
            left = lock.expires_in() - lock.renew_interval / 2
            if left > 0:
                log.warning(
                    "could not verify lease %s before reporting (%s); retrying for %.1fs more",
                    lock.name,
                    error,
                    left,
                )
                await asyncio.sleep(min(VERIFY_RETRY_SECONDS, left))
                continue
            why = f"could not verify lease {lock.name} before it would run out ({error})"
        lost = outcomes.lease_lost(f"{why}; this attempt's {outcome.state} is not reported")
        lost.duration, lost.abandoned = outcome.duration, outcome.abandoned
        return lost


async def _handle(
    spec: TaskSpec,
    ctx: Context,
    *,
    executor: TaskThreads | None,
    cancel_event: CancelSignal,
    store: ObjectStore | None,
    lock: JobLock | None,
    abort: asyncio.Future[Any] | None,
    replaced: asyncio.Future[Any] | None,
    processes: TaskProcesses | None,
) -> Outcome:
    """The handler's outcome (:func:`run_attempt`), before the Lease is verified."""
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
                message=error_message(error),
                retryable=False,
            )
        )

    isolated: Call | None = None
    if spec.is_async:
        handler: asyncio.Future[Any] = asyncio.ensure_future(spec.fn(*args, **kwargs))
    else:
        if executor is None:
            raise RuntimeError("sync tasks need an executor")
        if spec.isolation is Isolation.PROCESS and processes is not None:
            # The thread only waits for the child, which can be stopped.
            isolated = processes.call(spec, args, kwargs, ctx)
            handler = executor.submit(isolated.run)
        else:
            call = functools.partial(contextvars.copy_context().run, spec.fn, *args, **kwargs)
            handler = executor.submit(call)

    watchers: dict[asyncio.Future[Any], str] = {}
    if lock is not None:
        # Renewed until released (after the ack), not only while the handler runs: a report
        # or an ack that takes longer than the Lease (NATS cut off) must not let the run's
        # redelivery take the Lease and run it again meanwhile.
        watchers[lock.keeping()] = "lease"
    if replaced is not None:
        watchers[replaced] = "replaced"
    if abort is not None:
        watchers[abort] = "shutdown"  # shared: watched, never cancelled here
    try:
        finished = await _first_done(handler, watchers, request.timeout_seconds)
    except asyncio.CancelledError:
        cancel_event.set()
        if isolated is not None:
            isolated.stop()
        handler.cancel()
        if lock is not None:
            lock.stop_keeping()
        raise

    if handler not in finished:
        cancel_event.set()
        fired = next((w for w in watchers if w in finished), None)
        if spec.is_async:
            await _stop_handler(handler)
        elif isolated is not None:
            isolated.stop()
        # A sync handler's future is left alone: it resolves once the thread returns (for an
        # isolated one: once its child is gone, within the grace).
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
                message=error_message(error),
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


def _interrupted(
    request: RunRequest, *, attempt: int, why: str | None, watcher: asyncio.Future[Any] | None
) -> Outcome:
    """The outcome of an attempt stopped by ``watcher`` (``why``), or by its timeout (None)."""
    if why is None:
        return outcomes.timed_out(request, attempt)
    if why == "shutdown":
        return outcomes.shut_down()
    if why == "replaced":
        return outcomes.replaced("the operator's cancel request")
    from kadence.leases import LeasePreempted

    error = watcher.exception() if watcher is not None and not watcher.cancelled() else None
    if isinstance(error, LeasePreempted):
        return outcomes.replaced(error.by)
    return outcomes.lease_lost(str(error) if error else "the lease was lost")


__all__ = ["HANDLER_CLEANUP", "run_attempt", "store_value"]
