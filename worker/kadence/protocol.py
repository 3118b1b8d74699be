"""The wire protocol between the scheduler, the workers and the result folder.

This is a purely computational module with no side-effects. Messages are immutable, versioned
pydantic models encoded as JSON. :func:`decode_run` and :func:`decode_result` raise
:class:`DecodeError` — never anything else — for bad input, with a message that names the problem,
so a consumer can dead-letter the message with that reason and go on.

A message of the results stream holds one :class:`RunResult`, or several of one Job's results
as a :class:`ResultBatch` (a busy worker reports the runs that end together in one message, one
JetStream round trip for all of them). Readers use :func:`decode_results`, which takes both.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kadence.constants import PROTOCOL_VERSION

#: Largest payload a run request may carry (the Job API enforces the same limit).
MAX_PAYLOAD_BYTES = 64 * 1024
#: Largest encoded run request a worker accepts; anything bigger is dead-lettered as oversize.
MAX_MESSAGE_BYTES = 256 * 1024
#: Largest results-stream message a reader accepts (a batch of results; NATS's default max
#: payload is 1 MiB). Workers keep their batches well below it.
MAX_RESULTS_BYTES = 1024 * 1024


if TYPE_CHECKING:
    # mypy takes no constant in a Literal; to type checkers the field is an int.
    Version = int
else:
    #: The ``version`` field of every message: pydantic accepts :data:`PROTOCOL_VERSION` only.
    Version = Literal[PROTOCOL_VERSION]


class DecodeError(ValueError):
    """A message could not be decoded; ``str(error)`` says why (used as the DLQ reason)."""


class OversizeError(DecodeError):
    """The message or its payload is over the size limit (a :class:`DecodeError` too)."""


class DeadLetterReason(enum.StrEnum):
    """Why a worker dead-lettered a message: the value of the ``Kadence-Dead-Reason`` header."""

    #: The message is not a valid run request (bad JSON, wrong version, missing fields).
    DECODE_ERROR = "DecodeError"
    #: The message or its payload is over the size limit.
    OVERSIZE = "Oversize"
    #: No task of that name is registered in the worker's App.
    UNKNOWN_TASK = "UnknownTask"
    #: The task failed with a non-retryable error (``kadence.Fail`` or a listed error type).
    NON_RETRYABLE = "NonRetryable"
    #: The task failed on its last allowed attempt.
    MAX_ATTEMPTS = "MaxAttempts"
    #: JetStream stopped delivering it (``maxDeliver`` reached without an ack): written by the
    #: operator, which moves such messages.
    MAX_DELIVERIES = "MaxDeliveries"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class JobRef(_Message):
    """Which Job a run belongs to (absent for ad-hoc ``enqueue`` runs)."""

    namespace: str
    name: str
    uid: str


class ObjectRef(_Message):
    """An object in S3 to read as a run's input."""

    bucket: str
    key: str


class OutputLocation(_Message):
    """Where a run writes its outputs: ``s3://<bucket>/<prefix>``."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class Backoff(_Message):
    initial_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed."""
        return float(min(self.max_seconds, self.initial_seconds * self.factor ** (attempt - 1)))


class RetryPolicy(_Message):
    max_attempts: int = 3
    backoff: Backoff = Field(default_factory=Backoff)
    non_retryable_errors: tuple[str, ...] = ()


class ConcurrencyPolicy(enum.StrEnum):
    """What happens when a slot fires while an earlier run is still active."""

    #: Runs may overlap; no lock is taken.
    ALLOW = "Allow"
    #: A new run is skipped while one is active; workers hold the Job's Lease.
    FORBID = "Forbid"
    #: At most one run waits for the active one; workers hold the Job's Lease.
    BUFFER_ONE = "BufferOne"
    #: The active run is cancelled for the new one; workers hold the Job's Lease.
    REPLACE = "Replace"

    @property
    def needs_lock(self) -> bool:
        return self is not ConcurrencyPolicy.ALLOW


class RunRequest(_Message):
    """One attempt-able run of a task, published to a Queue partition.

    ``run_id`` is deterministic (Job uid + slot, or trigger value) and is also the message's
    ``Nats-Msg-Id``, so the same run is enqueued at most once.
    """

    version: Version = PROTOCOL_VERSION
    run_id: str = Field(min_length=1, max_length=128)
    task: str = Field(min_length=1, max_length=253)
    payload: Any = None
    job: JobRef | None = None
    input: ObjectRef | None = None
    output: OutputLocation | None = None
    scheduled_at: datetime | None = None
    #: What caused the run (``Schedule``, ``CatchUp``, ``Backfill`` or ``Manual``). Workers copy
    #: it into their results, so the operator can record a run whose dispatch record was lost
    #: (the operator crashed between the publish and the status write) with its trigger.
    trigger: str | None = Field(None, max_length=32)
    #: Per-attempt time limit in seconds (the Job's ``timeout``).
    timeout_seconds: float | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    #: The Queue's ack wait, so workers send in-progress acks often enough.
    ack_wait_seconds: float = 30.0
    #: Where workers copy messages they dead-letter themselves (poison, unknown task, …).
    dlq_subject: str | None = None
    partition_key: str | None = None


class RunState(enum.StrEnum):
    """The outcome of one attempt, as reported by a worker."""

    #: The handler returned; outputs are written.
    SUCCEEDED = "Succeeded"
    #: The handler failed and will not be retried (no attempts left, or non-retryable).
    FAILED = "Failed"
    #: The handler raised and the run will be attempted again after a backoff.
    RETRYING = "Retrying"
    #: The attempt exceeded the Job's timeout (retried like a failure while attempts remain).
    TIMED_OUT = "TimedOut"
    #: The attempt was cancelled (Replace policy) or the worker shut down.
    CANCELLED = "Cancelled"
    #: The message was dead-lettered (poison, unknown task, undecodable).
    DEAD_LETTERED = "DeadLettered"
    #: The attempt started (sent so the operator can show it as active).
    RUNNING = "Running"


class OutputObject(_Message):
    uri: str
    size: int
    etag: str


class RunError(_Message):
    type: str
    message: str
    retryable: bool = False


class RunResult(_Message):
    """What a worker reports about one attempt, published to the results stream."""

    version: Version = PROTOCOL_VERSION
    run_id: str
    attempt: int = Field(ge=1)
    job: JobRef | None = None
    state: RunState
    scheduled_at: datetime | None = None
    #: The run request's ``trigger``, copied.
    trigger: str | None = Field(None, max_length=32)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: tuple[OutputObject, ...] = ()
    error: RunError | None = None
    #: The Job Lease's ``leaseTransitions`` when the attempt took the lock; a larger value recorded
    #: in status means this report comes from a stale holder.
    fencing_token: int | None = None
    worker: str = ""

    @property
    def is_final(self) -> bool:
        """True when this report ends the run: every state but ``Running`` and ``Retrying``.

        Workers report anything after which the run goes on as ``Retrying`` — a failure or a
        timeout with attempts left, a worker shutdown, a lost Lease — so that ``TimedOut`` and
        ``Cancelled`` are always final.
        """
        return self.state not in (RunState.RUNNING, RunState.RETRYING)

    @property
    def dedupe_id(self) -> str:
        """``Nats-Msg-Id`` of the result: one report per run, attempt and state."""
        return f"{self.run_id}:{self.attempt}:{self.state.value}"


class ResultBatch(_Message):
    """Several results of one Job (or several ad-hoc runs) in one message of the results stream.

    Sent instead of single :class:`RunResult` messages when a worker has more than one result
    to report at the same moment. Its ``Nats-Msg-Id`` (:attr:`dedupe_id`) is derived from the
    results' own ids, so publishing the same batch again is de-duplicated like a single result.
    """

    version: Version = PROTOCOL_VERSION
    results: tuple[RunResult, ...] = Field(min_length=1)

    @property
    def dedupe_id(self) -> str:
        return batch_dedupe_id(r.dedupe_id for r in self.results)


def batch_dedupe_id(ids: Iterable[str]) -> str:
    """``Nats-Msg-Id`` of a batch whose results have these ``dedupe_id`` values, in order."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    return f"batch:{digest}"


class CancelRequest(_Message):
    """The operator asks workers to stop runs of a Job (``concurrencyPolicy: Replace``).

    Published on core NATS (:func:`kadence.constants.cancel_subject`) just before the run that
    replaces them. A worker running one of ``run_ids`` for the Job ``job_uid`` stops it and
    reports it ``Cancelled`` (error ``Replaced``); the Lease preemption of the replacing run is
    the fallback for a worker that missed the message.
    """

    version: Version = PROTOCOL_VERSION
    job_uid: str
    run_ids: tuple[str, ...]


def _decode(model: type[_Message], data: bytes, what: str) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise OversizeError(f"{what} is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise _named(error, what) from None


def _validate(model: type[_Message], value: Any, what: str) -> Any:
    """``model`` from already parsed JSON; :class:`DecodeError` names what is wrong."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise _named(error, what) from None


def _named(error: ValidationError, what: str) -> DecodeError:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    if first["type"] == "json_invalid":
        return DecodeError(f"{what} is not valid JSON: {first['msg']}")
    return DecodeError(f"{what} field {where!r}: {first['msg']}")


def encode(message: _Message) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


def decode_run(data: bytes) -> RunRequest:
    """Decode a run request; :class:`DecodeError` names what is wrong."""
    request: RunRequest = _decode(RunRequest, data, "run request")
    if request.payload is not None:
        size = len(json.dumps(request.payload, separators=(",", ":")).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise OversizeError(
                f"run request payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
            )
    return request


def decode_result(data: bytes) -> RunResult:
    """Decode a run result; :class:`DecodeError` names what is wrong."""
    result: RunResult = _decode(RunResult, data, "run result")
    return result


def encode_batch(results: Sequence[RunResult]) -> bytes:
    """A :class:`ResultBatch` of ``results`` (each encoded as :func:`encode` does)."""
    return _join_batch([encode(r) for r in results])


def results_message(
    results: Sequence[RunResult], encoded: Sequence[bytes] | None = None
) -> tuple[bytes, str]:
    """The body and ``Nats-Msg-Id`` of one results-stream message holding ``results``: one
    result as :func:`encode` writes it with its own :attr:`~RunResult.dedupe_id`, several as a
    :class:`ResultBatch` with :func:`batch_dedupe_id`. ``encoded``: the same results already
    encoded, so they are not encoded again."""
    if not results:
        raise ValueError("a results message needs at least one result")
    parts = list(encoded) if encoded is not None else [encode(r) for r in results]
    if len(results) == 1:
        return parts[0], results[0].dedupe_id
    return _join_batch(parts), batch_dedupe_id(r.dedupe_id for r in results)


#: How a :class:`ResultBatch` starts on the wire (as the model would write it).
_BATCH_HEAD = b'{"version":%d,"results":[' % PROTOCOL_VERSION


def _join_batch(encoded: Sequence[bytes]) -> bytes:
    if not encoded:
        raise ValueError("a result batch needs at least one result")
    return _BATCH_HEAD + b",".join(encoded) + b"]}"


@dataclass(frozen=True, slots=True)
class DecodedResults:
    """What one message of the results stream holds: its results, and what could not be read."""

    results: list[RunResult] = field(default_factory=list)
    #: One line per result that failed to decode (a batch's good results are still returned).
    errors: list[str] = field(default_factory=list)


def decode_results(data: bytes) -> DecodedResults:
    """Decode a message of the results stream: a single :class:`RunResult` or a
    :class:`ResultBatch`. Raises :class:`DecodeError` when the message as a whole is unreadable;
    a bad entry of a batch is named in ``errors`` and the others are returned.
    """
    if len(data) > MAX_RESULTS_BYTES:
        raise OversizeError(
            f"results message is {len(data)} bytes, over the {MAX_RESULTS_BYTES}-byte limit"
        )
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"run result is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or "results" not in raw:
        return DecodedResults(results=[_validate(RunResult, raw, "run result")])
    if raw.get("version", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise DecodeError(f"result batch field 'version': unsupported version {raw['version']!r}")
    entries = raw["results"]
    if not isinstance(entries, list) or not entries:
        raise DecodeError("result batch field 'results': expected a non-empty list")
    decoded = DecodedResults()
    for index, entry in enumerate(entries):
        try:
            decoded.results.append(_validate(RunResult, entry, f"result batch entry {index}"))
        except DecodeError as error:
            decoded.errors.append(str(error))
    return decoded


def decode_cancel(data: bytes) -> CancelRequest:
    """Decode a cancel request; :class:`DecodeError` names what is wrong."""
    request: CancelRequest = _decode(CancelRequest, data, "cancel request")
    return request


def salvage_ids(data: bytes) -> tuple[str | None, JobRef | None]:
    """Best effort: the ``run_id`` and Job of a message that failed to decode.

    A worker dead-letters such a message and still reports it to the Job when it can tell which
    run it was, so an oversize payload shows up in status rather than vanishing. Never raises.
    """
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(raw, dict):
        return None, None
    run_id = raw.get("run_id")
    if not (isinstance(run_id, str) and 0 < len(run_id) <= 128):
        run_id = None
    job: JobRef | None = None
    if raw.get("job") is not None:
        try:
            job = JobRef.model_validate(raw["job"])
        except ValidationError:
            job = None
    return run_id, job
