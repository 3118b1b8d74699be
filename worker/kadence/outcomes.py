"""What an attempt's end means for its run: the state to report and what to do with the message.

Pure decisions, no I/O: :func:`classify` turns the exception a handler raised into an
:class:`Outcome` (``Retry``/``Fail``, ``retryPolicy.nonRetryableErrors``, attempts left), and
:func:`failure`, :func:`timed_out`, :func:`shut_down`, :func:`replaced` and :func:`lease_lost`
build the outcomes of the other ways an attempt ends. :mod:`kadence.attempt` runs the handler
and picks one of these; the worker (:mod:`kadence.runtime`, :mod:`kadence.settling`) reports the
outcome and disposes of the message; :mod:`kadence.testing` does the same in memory.

This module imports neither asyncio nor NATS (an import contract in ``pyproject.toml`` keeps it
so), so its table of error → outcome is tested without an event loop
(``tests/unit/test_outcomes.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kadence.app import Fail, Retry
from kadence.protocol import DeadLetterReason, OutputObject, RunError, RunRequest, RunState

#: Longest error message reported (longer ones are cut, with "...").
MAX_ERROR_MESSAGE = 4000


class Disposition(enum.StrEnum):
    """What happens to the run message after an attempt."""

    ACK = "ack"  # done: remove it from the Queue
    NAK = "nak"  # attempt again (after ``Outcome.delay``)
    TERM = "term"  # never again (dead-lettered or replaced)
    NONE = "none"  # another worker owns the delivery now (lost Lease): leave it alone


class Running(Protocol):
    """A sync handler still running in its thread: the ``asyncio`` future of its call, which
    resolves (on the event loop) once the thread returns."""

    def done(self) -> bool: ...

    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...


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
    abandoned: Running | None = field(default=None, repr=False)

    @property
    def error_text(self) -> str:
        return f"{self.error.type}: {self.error.message}" if self.error else ""


def _error_names(error: BaseException) -> set[str]:
    names: set[str] = set()
    for cls in type(error).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def error_message(error: BaseException) -> str:
    """``str(error)`` (or its ``repr`` when empty), cut to :data:`MAX_ERROR_MESSAGE` characters."""
    text = str(error) or repr(error)
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 3] + "..."


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
        message=error_message(error),
        retryable=not non_retryable,
    )


def timed_out(request: RunRequest, attempt: int) -> Outcome:
    """The attempt ran past the request's timeout: retried while attempts remain."""
    return failure(
        request,
        attempt,
        error_type="TimedOut",
        message=f"the attempt exceeded its {request.timeout_seconds:g}s timeout",
        retryable=True,
        timed_out=True,
    )


def shut_down() -> Outcome:
    """The worker's grace period ended first: reported ``Retrying``, not ``Cancelled`` (which
    ends a run), and put back at once for another worker."""
    return Outcome(
        state=RunState.RETRYING,
        disposition=Disposition.NAK,
        error=RunError(type="WorkerShutdown", message="the worker shut down", retryable=True),
    )


def replaced(by: str) -> Outcome:
    """``concurrencyPolicy: Replace`` stopped the attempt: the run ends ``Cancelled``."""
    return Outcome(
        state=RunState.CANCELLED,
        disposition=Disposition.TERM,
        error=RunError(type="Replaced", message=f"replaced by a newer run ({by})", retryable=False),
    )


def lease_lost(message: str) -> Outcome:
    """Another holder took the Job's Lease: not final, the newer holder runs it. The report
    carries this holder's (stale) fencing token and the message is left to that holder,
    neither acked nor nak'ed."""
    return Outcome(
        state=RunState.RETRYING,
        disposition=Disposition.NONE,
        error=RunError(type="LeaseLost", message=message, retryable=True),
    )


__all__ = [
    "MAX_ERROR_MESSAGE",
    "Disposition",
    "Outcome",
    "Running",
    "classify",
    "error_message",
    "failure",
    "lease_lost",
    "replaced",
    "shut_down",
    "timed_out",
]
