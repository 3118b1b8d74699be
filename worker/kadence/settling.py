"""Settling a finished run: the one path from an attempt's outcome to the end of its message.

:meth:`Settler.settle` takes an :class:`~kadence.outcomes.Outcome` and, in this order:

1. copies the message to the dead-letter stream when the outcome says so; if that copy cannot be
   stored, the message is put back (nak, 5 s) and nothing is reported, so the next delivery
   tries again;
2. reports the result (:class:`~kadence.reporting.ResultReporter`: results that end together go
   out in one message), when the run is known;
3. once the report is stored, acts on the message as the outcome says: ``ACK`` sends a double
   ack and retries it until confirmed (the acks of runs whose results were stored together are
   written together); ``NAK`` puts it back after the outcome's delay; ``TERM`` terminates it;
   ``NONE`` leaves it to the Lease's newer holder. A report that could not be stored turns an
   ``ACK`` into a nak (2 s): a run is never acked without its report. A ``NAK`` or ``TERM``
   goes ahead all the same (the run is attempted again, or its dead-letter copy exists);
4. releases the Job's Lease, if the run held one (after the ack: the Job's next run must not
   start before this one is settled);
5. gives the run's concurrency :class:`Slot` back (or has given it already, see there).

It remembers the runs whose end it reported (:attr:`Settler.ended`), so that the worker acks a
redelivery of one (its ack was lost) instead of running it again (:meth:`Settler.ack_ended`).

Every run takes this one path, whatever its outcome. It runs on callbacks — the reporter's when
the result is stored, the reply inbox's when the ack is confirmed — and not in the run's task,
which ends once it has handed the outcome over: a busy worker settles thousands of runs a second
and a task per run would cost a sizeable share of its CPU (docs/performance.md, section (d)).
Only the slower steps of the rarer outcomes get a task: the dead-letter copy (retried with
backoff), a nak or term (a publish) and the Lease's release (a Kubernetes request).

At shutdown :meth:`Settler.aclose` waits for the reports in flight and the confirmations still
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from kadence import constants
from kadence._nats import mark_acked
from kadence.client import KadenceClient
from kadence.consumer import QueueMessage
from kadence.deadletter import dlq_headers
from kadence.metrics import WorkerMetrics
from kadence.outcomes import Disposition, Outcome, Running
from kadence.protocol import DeadLetterReason, RunRequest, RunResult, RunState
from kadence.reporting import ResultReporter
from kadence.slots import Slots

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock

log = logging.getLogger("kadence.worker")

#: Publishing a report, copying to the dead-letter stream or confirming an ack is tried this
#: often before giving up.
PUBLISH_TRIES = 4
#: Longest wait at shutdown for the reports still in flight.
REPORTS_WAIT = 10.0
#: Longest wait at shutdown for the double acks still out: a request's timeout (5 s) per try.
ACK_SETTLE_WAIT = 5.0 * PUBLISH_TRIES + 3
#: Seconds before a message whose report or dead-letter copy could not be stored comes back.
_UNREPORTED_DELAY = 2.0
_NOT_DEAD_LETTERED_DELAY = 5.0
#: How many runs whose end this worker reported it remembers (:attr:`Settler.ended`).
ENDED_MEMORY = 4096


class Slot:
    """One message's concurrency slot, given back exactly once.

    The slot is given back as soon as the handler ends (:meth:`free_early`), so the reports and
    the ack of a finished run never keep the worker from fetching the next one. At most
    ``settle_limit`` finished runs settle at once; past that a run keeps its slot until it is
    settled, so a slow results stream slows fetching instead of piling up runs. A sync handler
    that outlived its attempt (:meth:`keep_for`) keeps the slot until its thread returns.
    """

    __slots__ = ("_early", "_given", "_owner", "_thread", "handed_off")

    def __init__(self, owner: Settler) -> None:
        self._owner = owner
        self._given = False
        self._early = False
        self._thread: Running | None = None
        #: The run was handed to :meth:`Settler.settle`, which settles the slot in the end.
        self.handed_off = False

    def free_early(self) -> None:
        """The handler has ended: free the slot now if the settle backlog allows it."""
        owner = self._owner
        if not self._given and self._thread is None and owner.settling < owner.settle_limit:
            owner.settling += 1
            self._given = self._early = True
            owner.slots.give(1)

    def keep_for(self, thread: Running) -> None:
        """A sync handler that cannot be interrupted still occupies its thread: keep the slot
        until it really ends, so the worker never runs more than ``concurrency`` threads."""
        if not self._given:
            self._thread = thread

    def settled(self) -> None:
        """The message is settled (or left alone): give the slot back if still held."""
        owner = self._owner
        if self._early:
            self._early = False
            owner.settling -= 1
        elif not self._given:
            self._given = True
            thread = self._thread
            if thread is not None and not thread.done():
                owner.abandoned += 1
                thread.add_done_callback(self._thread_ended)
            else:
                owner.slots.give(1)

    def _thread_ended(self, _: object) -> None:
        self._owner.abandoned -= 1
        self._owner.slots.give(1)

    @property
    def held(self) -> bool:
        return not self._given


class _Settle:
    """A finished run on its way through :meth:`Settler.settle`."""

    __slots__ = ("delay", "disposition", "lock", "message", "result", "settler", "slot", "tries")

    def __init__(
        self,
        settler: Settler,
        message: QueueMessage,
        outcome: Outcome,
        result: RunResult | None,
        lock: JobLock | None,
        slot: Slot,
    ) -> None:
        self.settler = settler
        self.message = message
        self.result = result
        self.disposition = outcome.disposition
        self.delay = outcome.delay
        self.lock = lock
        self.slot = slot
        #: Ack requests sent so far that were not confirmed.
        self.tries = 0

    def __call__(self, error: BaseException | None) -> None:
        """The reporter's callback: the result is stored, or failed to be."""
        self.settler._stored(self, error)

    def acked(self, reply: Msg | None, error: BaseException | None) -> None:
        """The reply inbox's callback: the ack is confirmed, or failed to be."""
        self.settler._acked(self, reply, error)


class Settler:
    """Reports a worker's finished runs and settles their messages (see the module)."""

    def __init__(
        self,
        client: KadenceClient,
        *,
        queue: str,
        slots: Slots,
        settle_limit: int,
        metrics: WorkerMetrics,
    ) -> None:
        self.client = client
        self.namespace = client.namespace
        self.queue = queue
        self.metrics = metrics
        #: The worker's concurrency slots, and how many finished runs may settle at once without
        #: holding one.
        self.slots = slots
        self.settle_limit = settle_limit
        #: Finished runs settling now without a slot (:meth:`Slot.free_early`).
        self.settling = 0
        #: Sync handlers still running in their threads after their attempts ended.
        self.abandoned = 0
        #: Runs handed to :meth:`settle` and not settled yet, and an event set whenever there
        #: are none.
        self.unsettled = 0
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._acks_due: list[_Settle] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: The runs whose end (a final state) this worker reported, newest last: a redelivery
        #: of one of them (its ack was lost, e.g. nats-server restarted before it arrived) is
        #: acked again rather than run a second time.
        self.ended: OrderedDict[str, RunState] = OrderedDict()
        #: Final reports, coalesced per Job while one is in flight (see kadence.reporting).
        self.reporter = ResultReporter(
            lambda subject, payload, msg_id: client.publish_report(subject, payload, msg_id=msg_id),
            subject=lambda result: client.result_subject(result, self.namespace),
            tries=PUBLISH_TRIES,
            observe=metrics.report_batch_size.observe,
        )

    def slot(self) -> Slot:
        """The slot of a message just fetched (it took one of :attr:`slots` along)."""
        return Slot(self)

    def settle(
        self,
        message: QueueMessage,
        outcome: Outcome,
        *,
        result: RunResult | None,
        slot: Slot,
        request: RunRequest | None = None,
        lock: JobLock | None = None,
        dead_letter_error: str | None = None,
    ) -> None:
        """Dead-letter, report ``result``, act on ``message``, release ``lock``, settle ``slot``.

        As ``outcome`` says, in the order of the module's steps; returns at once, the steps go on
        in callbacks. ``result`` is None for a run nobody can be told about (undecodable).
        ``request`` names the dead-letter subject; ``dead_letter_error`` is the error written on
        the dead-letter copy (the outcome's ``error_text`` by default).
        """
        slot.handed_off = True
        self.unsettled += 1
        entry = _Settle(self, message, outcome, result, lock, slot)
        if outcome.dead_letter is None:
            self._report(entry)
            return
        error = outcome.error_text if dead_letter_error is None else dead_letter_error
        self._spawn(self._dead_letter_first(entry, outcome.dead_letter, error, request))

    async def aclose(self) -> None:
        """At shutdown, once no attempt is left: wait for the reports and acks still out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reporter.aclose(), timeout=REPORTS_WAIT)
        if self.unsettled:
            self._all_settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), timeout=ACK_SETTLE_WAIT)

    # -- 1. the dead-letter copy -----------------------------------------------------------------

    async def _dead_letter_first(
        self, entry: _Settle, reason: DeadLetterReason, error: str, request: RunRequest | None
    ) -> None:
        try:
            copied = await self._dead_letter(entry.message, reason, error, request)
        except Exception:  # a bug: the run must still settle
            log.exception("copying %s to the dead-letter stream failed", entry.message.subject)
            copied = False
        if copied:
            self._report(entry)
            return
        # Not reported either: the next delivery copies and reports it.
        entry.result = None
        entry.disposition, entry.delay = Disposition.NAK, _NOT_DEAD_LETTERED_DELAY
        await self._dispose(entry)

    async def _dead_letter(
        self,
        message: QueueMessage,
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
        for attempt in range(PUBLISH_TRIES):
            try:
                await self.client.js.publish(subject, message.data, headers=headers)
                return True
            except nats.js.errors.NoStreamResponseError:
                # No DLQ stream: the Queue has dead-lettering disabled, so the message is dropped.
                log.info("no dead-letter stream for %s; dropping the message", subject)
                return True
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("copying to the dead-letter stream failed (%s); retrying", exc)
                await asyncio.sleep(0.5 * 2**attempt)
        return False

    # -- 2. the report -----------------------------------------------------------------------------

    def _report(self, entry: _Settle) -> None:
        if entry.result is None:
            self._stored(entry, None)
        else:
            self.reporter.submit(entry.result, entry)

    def _stored(self, entry: _Settle, error: BaseException | None) -> None:
        result = entry.result
        if error is None and result is not None and result.is_final:
            self._ended(result)
        if error is not None:
            assert result is not None
            log.warning(
                "the %s result of %s was not stored (%s)", result.state, result.run_id, error
            )
            if entry.disposition is Disposition.ACK:
                # Never ack a run nobody heard about: run it again rather than lose the report.
                entry.disposition, entry.delay = Disposition.NAK, _UNREPORTED_DELAY
        if entry.disposition is Disposition.ACK:
            self._queue_ack(entry)
        else:
            self._spawn(self._dispose(entry))

    def _ended(self, result: RunResult) -> None:
        self.ended[result.run_id] = result.state
        self.ended.move_to_end(result.run_id)
        if len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)

    def ack_ended(
        self, message: QueueMessage, state: RunState, slot: Slot, *, lock: JobLock | None = None
    ) -> None:
        """A redelivery of a run this worker already reported ended: ack it, report nothing
        (and release the Job's Lease it took meanwhile)."""
        outcome = Outcome(state=state, disposition=Disposition.ACK)
        self.settle(message, outcome, result=None, slot=slot, lock=lock)

    # -- 3. the message: double ack (in callbacks), or nak, term or nothing ----------------------

    def _queue_ack(self, entry: _Settle) -> None:
        self._acks_due.append(entry)
        if len(self._acks_due) == 1:
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        due, self._acks_due = self._acks_due, []
        requests = []
        for entry in due:
            reply = entry.message.msg.reply
            if not reply:  # not a JetStream message: nothing to ack (never from a Queue)
                self._finish(entry)
                continue
            requests.append((reply, b"", entry.acked))  # an empty request is "+ACK"
        self.client.requests.send_now(requests)

    def _acked(self, entry: _Settle, reply: Msg | None, error: BaseException | None) -> None:
        if error is None and reply is not None and (reply.headers or {}).get("Status") == "503":
            error = nats.errors.NoRespondersError()
        message = entry.message
        if error is None:
            mark_acked(message.msg)  # what nats-py's own ack_sync records
            self._finish(entry)
            return
        entry.tries += 1
        if entry.tries < PUBLISH_TRIES:
            log.warning("ack of %s not confirmed (%s); retrying", message.subject, error)
            asyncio.get_running_loop().call_later(
                0.2 * 2 ** (entry.tries - 1), self._queue_ack, entry
            )
            return
        log.error("ack of %s never confirmed; the run may be redelivered", message.subject)
        self._finish(entry)

    async def _dispose(self, entry: _Settle) -> None:
        """Nak, term or leave the message, as ``entry`` says; then release and settle."""
        message = entry.message
        try:
            if entry.disposition is Disposition.NAK:
                await message.nak(delay=entry.delay)
            elif entry.disposition is Disposition.TERM:
                await message.term()
        except nats.errors.Error as error:
            log.warning("%s of %s failed: %s", entry.disposition, message.subject, error)
        finally:
            await self._release_and_settle(entry)

    # -- 4. the Lease, 5. the slot -----------------------------------------------------------------

    def _finish(self, entry: _Settle) -> None:
        if entry.lock is None:
            self._settled(entry)
        else:
            self._spawn(self._release_and_settle(entry))

    async def _release_and_settle(self, entry: _Settle) -> None:
        try:
            if entry.lock is not None:
                await _release(entry.lock)
        finally:
            self._settled(entry)

    def _settled(self, entry: _Settle) -> None:
        entry.slot.settled()
        self.unsettled -= 1
        if not self.unsettled:
            self._all_settled.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("settling a run failed", exc_info=error)


async def _release(lock: JobLock) -> None:
    from kadence.leases import LeaseError

    try:
        await lock.arelease()
    except LeaseError as error:
        # It expires on its own after lease_duration; the next run just waits that long.
        log.warning("releasing lease %s failed: %s", lock.name, error)


__all__ = ["ACK_SETTLE_WAIT", "PUBLISH_TRIES", "Settler", "Slot"]
