"""Run tasks in memory, for unit tests of task code (like dramatiq's ``StubBroker``).

No NATS, no S3, no Kubernetes: :class:`StubBroker` queues run requests in memory and runs them
with the worker's own attempt logic (:func:`kadence.attempt.run_attempt`), so payload
validation, ``Retry``/``Fail``, retries with backoff, timeouts, the stored return value and
dead-lettering behave as in a real worker. Outputs go to a :class:`MemoryStorage`::

    from kadence.testing import StubBroker
    from myproject.tasks import app

    def test_build_report() -> None:
        broker = StubBroker(app)
        broker.enqueue("reports.build", {"day": "2024-05-01"})
        (run,) = broker.run_until_complete()
        assert run.state == "Succeeded"
        assert run.output("report.csv").startswith(b"region,")

Backoff delays are recorded in ``run.delays`` but not slept (pass ``sleep=True`` to sleep).
Tasks registered with ``isolation="process"`` run in the broker's thread like other sync tasks:
no child process (the in-memory store could not be shared with one), so no hard time limit.
Each attempt writes under its own ``attempt-<n>/`` folder, as in a worker.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from kadence import constants
from kadence.app import App, CancelFlag, Context
from kadence.attempt import run_attempt
from kadence.client import new_run_id
from kadence.outcomes import Disposition
from kadence.protocol import (
    DeadLetterReason,
    DecodeError,
    JobRef,
    ObjectRef,
    OutputObject,
    OversizeError,
    RetryPolicy,
    RunError,
    RunRequest,
    RunResult,
    RunState,
    decode_run,
    encode,
    salvage_ids,
)
from kadence.storage import OutputWriter, Readable, output_location, s3_uri
from kadence.threads import TaskThreads

__all__ = ["MemoryStorage", "StoredObject", "StubBroker", "StubRun"]


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str
    etag: str


class MemoryStorage:
    """An in-memory :class:`~kadence.storage.ObjectStore`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self._lock = threading.Lock()

    def ensure_bucket(self, bucket: str) -> None:
        return None

    def put(
        self, bucket: str, key: str, *, data: IO[bytes], length: int, content_type: str
    ) -> OutputObject:
        raw = data.read()
        if length >= 0 and len(raw) != length:
            raise ValueError(f"expected {length} bytes for {key}, read {len(raw)}")
        etag = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        with self._lock:
            self.objects[(bucket, key)] = StoredObject(raw, content_type, etag)
        return OutputObject(uri=s3_uri(bucket, key), size=len(raw), etag=etag)

    def open(self, bucket: str, key: str) -> Readable:
        with self._lock:
            stored = self.objects.get((bucket, key))
        if stored is None:
            from kadence.storage import StorageError

            raise StorageError(f"{s3_uri(bucket, key)} does not exist")
        return io.BytesIO(stored.data)

    def get(self, uri_or_bucket: str, key: str | None = None) -> bytes:
        """An object's bytes, by ``s3://bucket/key`` or by bucket and key."""
        if key is None:
            bucket, _, key = uri_or_bucket.removeprefix("s3://").partition("/")
        else:
            bucket = uri_or_bucket
        return self.objects[(bucket, key)].data


@dataclass
class StubRun:
    """Everything that happened to one run in the :class:`StubBroker`."""

    run_id: str
    #: The decoded request (None for an undecodable message whose run id could be salvaged).
    request: RunRequest | None
    storage: MemoryStorage
    #: Every report a real worker would have published, in order.
    results: list[RunResult] = field(default_factory=list)
    #: Backoff delays asked for between attempts.
    delays: list[float] = field(default_factory=list)
    #: The return value of the successful attempt.
    value: Any = None
    #: Why it was dead-lettered, if it was.
    dead_letter: DeadLetterReason | None = None
    heartbeats: int = 0
    deliveries: int = 0

    @property
    def final(self) -> RunResult | None:
        return next((r for r in reversed(self.results) if r.is_final), None)

    @property
    def state(self) -> RunState | None:
        """The last reported state (the final one once the run is done)."""
        return self.results[-1].state if self.results else None

    @property
    def succeeded(self) -> bool:
        return self.state is RunState.SUCCEEDED

    @property
    def attempts(self) -> int:
        return sum(1 for r in self.results if r.state is RunState.RUNNING)

    @property
    def error(self) -> RunError | None:
        return self.results[-1].error if self.results else None

    @property
    def outputs(self) -> tuple[OutputObject, ...]:
        return self.results[-1].outputs if self.results else ()

    def output(self, name: str) -> bytes:
        """The bytes of output ``name`` of the last attempt (e.g. ``"report.csv"``)."""
        for obj in self.outputs:
            if obj.uri.endswith("/" + name):
                return self.storage.get(obj.uri)
        written = [o.uri for o in self.outputs]
        raise KeyError(f"run {self.run_id} wrote no output {name!r}; it wrote {written}")

    def result_json(self) -> Any:
        """The stored return value, decoded from ``result.json``."""
        return json.loads(self.output(constants.RESULT_JSON_OBJECT))


class StubBroker:
    """An in-memory Queue and worker for one :class:`App`."""

    def __init__(
        self,
        app: App,
        *,
        namespace: str = "default",
        bucket: str = constants.DEFAULT_OUTPUT_BUCKET,
        worker: str = "stub-worker",
        sleep: bool = False,
    ) -> None:
        self.app = app
        self.namespace = namespace
        self.bucket = bucket
        self.worker = worker
        self.sleep = sleep
        self.storage = MemoryStorage()
        self.runs: dict[str, StubRun] = {}
        #: Messages dead-lettered without a known run (undecodable).
        self.dead_letters: list[tuple[DeadLetterReason, str, bytes]] = []
        self._queue: collections.deque[tuple[bytes, StubRun | None, int]] = collections.deque()

    def put_input(self, key: str, data: bytes | str, *, bucket: str = "inputs") -> ObjectRef:
        """Store an input object and return the reference to pass as ``enqueue(input=...)``."""
        raw = data.encode() if isinstance(data, str) else data
        self.storage.put(bucket, key, data=io.BytesIO(raw), length=len(raw), content_type="")
        return ObjectRef(bucket=bucket, key=key)

    def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
        input: ObjectRef | None = None,
        job: JobRef | None = None,
        scheduled_at: datetime | None = None,
    ) -> RunRequest:
        """Queue a run of ``task``; it runs on :meth:`join` / :meth:`run_until_complete`."""
        policy = retry or RetryPolicy()
        if max_attempts is not None:
            policy = policy.model_copy(update={"max_attempts": max_attempts})
        request = RunRequest(
            run_id=run_id or new_run_id(),
            task=task,
            payload=payload,
            retry=policy,
            timeout_seconds=timeout_seconds,
            input=input,
            job=job,
            scheduled_at=scheduled_at,
        )
        self.publish(encode(request))
        return request

    def publish(self, data: bytes) -> None:
        """Queue raw message bytes (to test how bad messages are handled)."""
        self._queue.append((data, None, 1))

    def run_until_complete(self) -> list[StubRun]:
        """Run everything queued, retries included; returns the runs in order of first delivery."""
        return asyncio.run(self.join())

    async def join(self) -> list[StubRun]:
        """:meth:`run_until_complete` for async tests."""
        done: list[StubRun] = []
        with TaskThreads(1, name="kadence-stub") as executor:
            while self._queue:
                data, run, delivery = self._queue.popleft()
                run = await self._deliver(data, run=run, delivery=delivery, executor=executor)
                if run is not None and run not in done:
                    done.append(run)
        return done

    async def _deliver(
        self, data: bytes, *, run: StubRun | None, delivery: int, executor: TaskThreads
    ) -> StubRun | None:
        try:
            request = decode_run(data)
        except DecodeError as error:
            reason = (
                DeadLetterReason.OVERSIZE
                if isinstance(error, OversizeError)
                else DeadLetterReason.DECODE_ERROR
            )
            run_id, job = salvage_ids(data)
            self.dead_letters.append((reason, str(error), data))
            if run_id is None:
                return None
            run = self.runs.setdefault(
                run_id, StubRun(run_id=run_id, request=None, storage=self.storage)
            )
            run.dead_letter = reason
            run.results.append(
                self._result(
                    run_id=run_id,
                    attempt=delivery,
                    job=job,
                    state=RunState.DEAD_LETTERED,
                    error=RunError(type=str(reason), message=str(error)),
                )
            )
            return run
        if run is None:
            run = self.runs.setdefault(
                request.run_id,
                StubRun(run_id=request.run_id, request=request, storage=self.storage),
            )
        run.deliveries = delivery
        spec = self.app.get(request.task)
        if spec is None:
            message = f"no task named {request.task!r} in app {self.app.name!r}"
            run.dead_letter = DeadLetterReason.UNKNOWN_TASK
            self.dead_letters.append((DeadLetterReason.UNKNOWN_TASK, message, data))
            run.results.append(
                self._result(
                    run_id=request.run_id,
                    attempt=delivery,
                    job=request.job,
                    state=RunState.DEAD_LETTERED,
                    error=RunError(type="UnknownTask", message=message),
                )
            )
            return run

        def heartbeat() -> None:
            run.heartbeats += 1

        cancel = CancelFlag()
        location = output_location(
            request, namespace=self.namespace, bucket=self.bucket, attempt=delivery
        )
        ctx = Context(
            request=request,
            attempt=delivery,
            output=OutputWriter(self.storage, location, cancelled=cancel.is_set),
            input_store=self.storage,
            heartbeat=heartbeat,
            worker=self.worker,
            cancel_event=cancel,
        )
        run.results.append(
            self._result(
                run_id=request.run_id, attempt=delivery, job=request.job, state=RunState.RUNNING
            )
        )
        outcome = await run_attempt(
            spec, ctx, executor=executor, cancel_event=cancel, store=self.storage
        )
        if outcome.dead_letter is not None:
            run.dead_letter = outcome.dead_letter
            self.dead_letters.append((outcome.dead_letter, outcome.error_text, data))
        run.results.append(
            self._result(
                run_id=request.run_id,
                attempt=delivery,
                job=request.job,
                state=outcome.state,
                error=outcome.error,
                outputs=outcome.outputs,
            )
        )
        if outcome.state is RunState.SUCCEEDED:
            run.value = outcome.value
        if outcome.disposition is Disposition.NAK:
            delay = outcome.delay or 0.0
            run.delays.append(delay)
            if self.sleep and delay:
                await asyncio.sleep(delay)
            self._queue.append((data, run, delivery + 1))
        return run

    def _result(
        self,
        *,
        run_id: str,
        attempt: int,
        job: JobRef | None,
        state: RunState,
        error: RunError | None = None,
        outputs: tuple[OutputObject, ...] = (),
    ) -> RunResult:
        return RunResult(
            run_id=run_id,
            attempt=attempt,
            job=job,
            state=state,
            error=error,
            outputs=outputs,
            worker=self.worker,
        )
