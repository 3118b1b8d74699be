"""A worker's run results, reported together when they end together.

A run is acked only once its result is stored in JetStream (its ``PubAck`` is back). Sent one
by one, that is a publish and a reply per run, and on a busy worker those two messages cost as
much CPU as the run itself. :class:`ResultReporter` sends at most one message per results
subject (one Job, or the namespace's ad-hoc runs) at a time: the results reported while that
message waits for its ``PubAck`` go out together in the next one, as a
:class:`~kadence.protocol.ResultBatch` with one ``PubAck`` for all of them.

So an idle worker's report leaves at once, as a single result, exactly as if sent alone, and
each run still waits for its own result to be stored before it is acked. A batch that fails is
sent again as it was (same ``Nats-Msg-Id``, so JetStream keeps one copy); if it keeps failing,
every run in it gets the error and is put back, as a failed single report would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors

from kadence.protocol import RunResult, encode, results_message

log = logging.getLogger("kadence.reporting")

#: Sends an encoded result or batch to ``subject`` with ``Nats-Msg-Id`` ``msg_id`` and returns
#: once JetStream has stored it (:meth:`kadence.client.KadenceClient.publish_report`).
Send = Callable[[str, bytes, str], Awaitable[object]]

#: Most results in one message, and most bytes of encoded results (NATS's default max payload
#: is 1 MiB; a reader takes up to :data:`~kadence.protocol.MAX_RESULTS_BYTES`).
MAX_BATCH = 100
MAX_BATCH_BYTES = 256 * 1024
#: Publishes per batch before its runs are told it failed, and the first pause between them.
TRIES = 3
RETRY_DELAY = 0.5


#: Told the outcome of a result handed to :meth:`ResultReporter.submit`: ``None`` once stored,
#: else the error (``asyncio.CancelledError`` when the reporter is cancelled).
Done = Callable[[BaseException | None], None]


@dataclass(slots=True)
class _Entry:
    result: RunResult
    data: bytes
    #: Whoever waits for the result to be stored: :meth:`ResultReporter.report`'s future, or
    #: the callback given to :meth:`ResultReporter.submit`.
    stored: asyncio.Future[None] | Done


class ResultReporter:
    """Coalesces results by subject, one message in flight per subject (see the module)."""

    def __init__(
        self,
        send: Send,
        *,
        subject: Callable[[RunResult], str],
        max_batch: int = MAX_BATCH,
        max_bytes: int = MAX_BATCH_BYTES,
        tries: int = TRIES,
        retry_delay: float = RETRY_DELAY,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or tries < 1:
            raise ValueError("max_batch and tries must be at least 1")
        self._send = send
        self._subject = subject
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._tries = tries
        self._retry_delay = retry_delay
        self._observe = observe
        #: Results waiting for their subject's message in flight to be acknowledged.
        self._waiting: dict[str, list[_Entry]] = {}
        #: Subjects with a message in flight.
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Messages sent (counting each batch once) and results they carried.
        self.messages = 0
        self.results = 0

    async def report(self, result: RunResult) -> None:
        """Return once ``result`` is stored in the results stream.

        Raises what the last publish raised (``nats.errors.Error``, ``TimeoutError``) when it
        could not be stored after :data:`TRIES` publishes.
        """
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add(_Entry(result, encode(result), stored))
        await stored

    def submit(self, result: RunResult, done: Done) -> None:
        """Like :meth:`report`, for a caller that does not wait: ``done`` is called once
        ``result`` is stored (with ``None``) or could not be (with the error), never from within
        this method. No future or task per result: a busy worker reports thousands a second."""
        self._add(_Entry(result, encode(result), done))

    def _add(self, entry: _Entry) -> None:
        subject = self._subject(entry.result)
        self._waiting.setdefault(subject, []).append(entry)
        if subject not in self._busy:
            self._start(subject)

    def _start(self, subject: str) -> None:
        """Send the next message of ``subject`` once the current iteration of the loop is over,
        so that every result reported in it joins."""
        self._busy.add(subject)
        task = asyncio.get_running_loop().create_task(self._drain(subject))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, subject: str) -> None:
        try:
            while entries := self._take(subject):
                await self._publish(subject, entries)
        finally:
            self._busy.discard(subject)

    def _take(self, subject: str) -> list[_Entry]:
        waiting = self._waiting.get(subject)
        if not waiting:
            self._waiting.pop(subject, None)
            return []
        size = len(waiting[0].data)
        count = 1
        while count < min(len(waiting), self._max_batch):
            size += len(waiting[count].data) + 1
            if size > self._max_bytes:
                break
            count += 1
        taken, self._waiting[subject] = waiting[:count], waiting[count:]
        return taken

    async def _publish(self, subject: str, entries: list[_Entry]) -> None:
        payload, msg_id = results_message([e.result for e in entries], [e.data for e in entries])
        error: BaseException | None = None
        for attempt in range(self._tries):
            try:
                await self._send(subject, payload, msg_id)
            except (nats.errors.Error, TimeoutError) as exc:
                error = exc
                log.warning(
                    "publishing %d result(s) to %s failed (%s)%s",
                    len(entries),
                    subject,
                    exc,
                    "; retrying" if attempt + 1 < self._tries else "",
                )
                if attempt + 1 < self._tries:
                    await asyncio.sleep(self._retry_delay * 2**attempt)
                continue
            except asyncio.CancelledError as cancelled:  # the worker is going away: so are its runs
                self._settle(entries, cancelled)
                raise
            except Exception as exc:  # a bug: its runs must not hang, and the next go out
                log.exception("publishing %d result(s) to %s failed", len(entries), subject)
                self._settle(entries, exc)
                return
            self.messages += 1
            self.results += len(entries)
            if self._observe is not None:
                self._observe(len(entries))
            self._settle(entries, None)
            return
        assert error is not None
        self._settle(entries, error)

    @staticmethod
    def _settle(entries: list[_Entry], error: BaseException | None) -> None:
        for entry in entries:
            stored = entry.stored
            if not isinstance(stored, asyncio.Future):
                try:
                    stored(error)
                except Exception:  # a bug in one caller's callback must not strand the others
                    log.exception("the callback of the result of %s failed", entry.result.run_id)
            elif stored.done():
                continue
            elif isinstance(error, asyncio.CancelledError):
                stored.cancel()
            elif error is None:
                stored.set_result(None)
            else:
                stored.set_exception(error)

    async def aclose(self) -> None:
        """Wait for the messages in flight (a worker's shutdown, after its runs are done)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "Done", "ResultReporter", "Send"]
