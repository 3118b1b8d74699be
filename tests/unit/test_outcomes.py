"""What an attempt's end means for its run (``kadence.outcomes``): no event loop, no NATS."""

from __future__ import annotations

import pytest

from kadence.app import Fail, Retry
from kadence.outcomes import (
    MAX_ERROR_MESSAGE,
    Disposition,
    Outcome,
    classify,
    error_message,
    failure,
    lease_lost,
    replaced,
    shut_down,
    timed_out,
)
from kadence.protocol import Backoff, DeadLetterReason, RetryPolicy, RunRequest, RunState


class Flaky(ConnectionError):
    pass


def request(**retry: object) -> RunRequest:
    return RunRequest(
        run_id="r1",
        task="t",
        timeout_seconds=2.5,
        retry=RetryPolicy.model_validate(
            {"max_attempts": 3, "backoff": Backoff(initial_seconds=1.0, factor=2.0), **retry}
        ),
    )


R = RunState
D = Disposition
NR = DeadLetterReason.NON_RETRYABLE
MAX = DeadLetterReason.MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("error", "attempt", "non_retryable", "expected"),
    [
        # error, attempt, nonRetryableErrors -> (state, disposition, delay, dead letter, type)
        (ValueError("bad"), 1, (), (R.RETRYING, D.NAK, 1.0, None, "ValueError")),
        (ValueError("bad"), 2, (), (R.RETRYING, D.NAK, 2.0, None, "ValueError")),
        (ValueError("bad"), 3, (), (R.FAILED, D.TERM, None, MAX, "ValueError")),
        (ValueError("bad"), 1, ("ValueError",), (R.FAILED, D.TERM, None, NR, "ValueError")),
        # a base class, or the module-qualified name, is matched too
        (Flaky("down"), 1, ("OSError",), (R.FAILED, D.TERM, None, NR, "Flaky")),
        (Flaky("down"), 1, (f"{__name__}.Flaky",), (R.FAILED, D.TERM, None, NR, "Flaky")),
        (Flaky("down"), 1, ("KeyError",), (R.RETRYING, D.NAK, 1.0, None, "Flaky")),
        (Retry("later"), 1, (), (R.RETRYING, D.NAK, 1.0, None, "Retry")),
        (Retry("later", delay=7), 2, (), (R.RETRYING, D.NAK, 7.0, None, "Retry")),
        (Retry("later", delay=7), 3, (), (R.FAILED, D.TERM, None, MAX, "Retry")),
        # Retry and Fail are never in nonRetryableErrors' way
        (Retry("later"), 1, ("Exception",), (R.RETRYING, D.NAK, 1.0, None, "Retry")),
        (Fail("no"), 1, (), (R.FAILED, D.TERM, None, NR, "Fail")),
        (Fail("no", error_type="BadInput"), 1, (), (R.FAILED, D.TERM, None, NR, "BadInput")),
    ],
)
def test_classify(
    error: BaseException,
    attempt: int,
    non_retryable: tuple[str, ...],
    expected: tuple[RunState, Disposition, float | None, DeadLetterReason | None, str],
) -> None:
    outcome = classify(error, request=request(non_retryable_errors=non_retryable), attempt=attempt)
    assert outcome.error is not None
    got = (
        outcome.state,
        outcome.disposition,
        outcome.delay,
        outcome.dead_letter,
        outcome.error.type,
    )
    assert got == expected
    assert outcome.error.retryable is (outcome.disposition is Disposition.NAK)


def test_the_error_message_is_reported_and_long_ones_are_cut() -> None:
    outcome = classify(KeyError("k"), request=request(), attempt=1)
    assert outcome.error_text == "KeyError: 'k'"
    assert error_message(RuntimeError()) == "RuntimeError()"
    long = error_message(ValueError("x" * 10_000))
    assert len(long) == MAX_ERROR_MESSAGE
    assert long.endswith("...")


def test_timeouts_are_retried_then_end_timed_out() -> None:
    first = timed_out(request(), 1)
    assert (first.state, first.disposition, first.delay) == (R.RETRYING, D.NAK, 1.0)
    last = timed_out(request(), 3)
    assert (last.state, last.disposition, last.dead_letter) == (R.TIMED_OUT, D.TERM, MAX)
    assert last.error is not None
    assert "2.5s timeout" in last.error.message


def test_failure_without_attempts_left_dead_letters_with_the_right_reason() -> None:
    retryable = failure(request(), 3, error_type="E", message="m", retryable=True)
    final = failure(request(), 1, error_type="E", message="m", retryable=False)
    assert (retryable.dead_letter, final.dead_letter) == (MAX, NR)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (shut_down(), (R.RETRYING, D.NAK, "WorkerShutdown")),
        (replaced("run r2"), (R.CANCELLED, D.TERM, "Replaced")),
        (lease_lost("taken by w2"), (R.RETRYING, D.NONE, "LeaseLost")),
    ],
)
def test_interrupted_attempts(
    outcome: Outcome, expected: tuple[RunState, Disposition, str]
) -> None:
    assert outcome.error is not None
    assert (outcome.state, outcome.disposition, outcome.error.type) == expected
    assert outcome.dead_letter is None
    assert outcome.delay is None
