"""The worker's one path from an outcome to the end of its message (``kadence.settling``):
dead-letter copy, report, then ack/nak/term, Lease release and the slot, in that order, for every
outcome. NATS, the results stream and the Lease are fakes that record what happens."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import nats.errors
import pytest
from prometheus_client import CollectorRegistry

from kadence import settling
from kadence.constants import DLQ_REASON_HEADER
from kadence.metrics import WorkerMetrics
from kadence.outcomes import Disposition, Outcome
from kadence.protocol import DeadLetterReason, RunError, RunResult, RunState
from kadence.reporting import ResultReporter
from kadence.settling import Settler
from kadence.slots import Slots


class RecordingSlots(Slots):
    def __init__(self, events: list[str]) -> None:
        super().__init__(1)
        self.events = events

    def give(self, count: int = 1) -> None:
        self.events.append("slot")
        super().give(count)


class Fakes:
    """The client, message and Lease of one run, recording into :attr:`events`."""

    def __init__(self) -> None:
        self.events: list[str] = []
        #: Failures to return, in order, for the publishes of results and the double acks.
        self.report_errors: list[BaseException] = []
        self.ack_errors: list[BaseException] = []
        self.msg = SimpleNamespace(reply="$JS.ACK.s.c.1.1.1.0.0", headers=None)
        self.client = SimpleNamespace(
            namespace="ns",
            publish_report=self.publish_report,
            result_subject=lambda result, namespace: f"results.{namespace}",
            requests=SimpleNamespace(send_now=self.send_now),
            js=SimpleNamespace(publish=self.dead_letter),
        )
        self.message = SimpleNamespace(
            msg=self.msg,
            subject="q.ns.0",
            data=b"{}",
            headers={},
            num_delivered=1,
            stream="s",
            stream_sequence=7,
            nak=self.nak,
            term=self.term,
        )
        self.lock = SimpleNamespace(name="lease", arelease=self.release)

    async def publish_report(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        if self.report_errors:
            self.events.append("report failed")
            raise self.report_errors.pop(0)
        self.events.append("report")

    def send_now(self, requests: list[tuple[str, bytes, Any]]) -> None:
        loop = asyncio.get_running_loop()
        for _, _, callback in requests:
            if self.ack_errors:
                self.events.append("ack failed")
                loop.call_soon(callback, None, self.ack_errors.pop(0))
            else:
                self.events.append("ack")
                loop.call_soon(callback, SimpleNamespace(headers=None), None)

    async def dead_letter(self, subject: str, data: bytes, *, headers: dict[str, str]) -> None:
        self.events.append(f"dead-letter {headers[DLQ_REASON_HEADER]}")

    async def nak(self, delay: float | None = None) -> None:
        self.events.append(f"nak {delay}")

    async def term(self) -> None:
        self.events.append("term")

    async def release(self) -> None:
        self.events.append("release")


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def settler(fakes: Fakes) -> Settler:
    slots = RecordingSlots(fakes.events)
    slots.free = 0  # the run's message holds the one slot
    settler = Settler(
        cast(Any, fakes.client),
        queue="q",
        slots=slots,
        settle_limit=0,  # the slot is given back only once settled, so it shows in the order
        metrics=WorkerMetrics(CollectorRegistry()),
    )
    # One publish per result, no pause: the retries are the reporter's (tests/unit/test_reporting).
    settler.reporter = ResultReporter(
        lambda subject, payload, msg_id: fakes.publish_report(subject, payload, msg_id=msg_id),
        subject=lambda result: fakes.client.result_subject(result, "ns"),
        tries=1,
        retry_delay=0,
    )
    return settler


def result(state: RunState) -> RunResult:
    return RunResult(run_id="r1", attempt=1, state=state)


async def settle(
    fakes: Fakes, outcome: Outcome, *, reported: bool = True, locked: bool = False
) -> list[str]:
    s = settler(fakes)
    slot = s.slot()
    s.settle(
        cast(Any, fakes.message),
        outcome,
        result=result(outcome.state) if reported else None,
        slot=slot,
        lock=cast(Any, fakes.lock) if locked else None,
    )
    assert slot.handed_off
    await s.aclose()
    assert (s.unsettled, s.slots.free) == (0, 1)
    return fakes.events


SUCCEEDED = Outcome(state=RunState.SUCCEEDED, disposition=Disposition.ACK)
RETRYING = Outcome(state=RunState.RETRYING, disposition=Disposition.NAK, delay=4.0)
FAILED = Outcome(
    state=RunState.FAILED,
    disposition=Disposition.TERM,
    error=RunError(type="Fail", message="no"),
    dead_letter=DeadLetterReason.NON_RETRYABLE,
)
LEASE_LOST = Outcome(state=RunState.RETRYING, disposition=Disposition.NONE)


@pytest.mark.parametrize(
    ("outcome", "locked", "expected"),
    [
        (SUCCEEDED, False, ["report", "ack", "slot"]),
        (SUCCEEDED, True, ["report", "ack", "release", "slot"]),
        (RETRYING, False, ["report", "nak 4.0", "slot"]),
        (RETRYING, True, ["report", "nak 4.0", "release", "slot"]),
        (FAILED, False, ["dead-letter NonRetryable", "report", "term", "slot"]),
        (FAILED, True, ["dead-letter NonRetryable", "report", "term", "release", "slot"]),
        (LEASE_LOST, True, ["report", "release", "slot"]),
    ],
)
async def test_every_outcome_takes_the_one_path_in_order(
    fakes: Fakes, outcome: Outcome, locked: bool, expected: list[str]
) -> None:
    assert await settle(fakes, outcome, locked=locked) == expected


async def test_the_ack_is_recorded_on_the_message(fakes: Fakes) -> None:
    await settle(fakes, SUCCEEDED)
    assert fakes.msg._ackd  # where nats-py's Msg.is_acked looks (kadence._nats.mark_acked)


async def test_a_run_whose_report_was_not_stored_is_put_back_not_acked(fakes: Fakes) -> None:
    fakes.report_errors.append(nats.errors.TimeoutError())
    assert await settle(fakes, SUCCEEDED, locked=True) == [
        "report failed",
        "nak 2.0",
        "release",
        "slot",
    ]


async def test_a_failure_is_put_back_or_terminated_even_if_its_report_was_lost(
    fakes: Fakes,
) -> None:
    fakes.report_errors.append(nats.errors.TimeoutError())
    assert await settle(fakes, RETRYING) == ["report failed", "nak 4.0", "slot"]


async def test_an_unconfirmed_ack_is_sent_again(fakes: Fakes) -> None:
    fakes.ack_errors.append(nats.errors.TimeoutError())
    assert await settle(fakes, SUCCEEDED) == ["report", "ack failed", "ack", "slot"]


async def test_an_unknown_run_is_dead_lettered_and_terminated_without_a_report(
    fakes: Fakes,
) -> None:
    outcome = Outcome(
        state=RunState.DEAD_LETTERED,
        disposition=Disposition.TERM,
        dead_letter=DeadLetterReason.DECODE_ERROR,
    )
    assert await settle(fakes, outcome, reported=False) == [
        "dead-letter DecodeError",
        "term",
        "slot",
    ]


async def test_a_run_that_could_not_be_dead_lettered_is_put_back_unreported(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settling, "PUBLISH_TRIES", 1)

    async def unavailable(subject: str, data: bytes, *, headers: dict[str, str]) -> None:
        fakes.events.append("dead-letter failed")
        raise nats.errors.NoRespondersError

    fakes.client.js.publish = unavailable
    assert await settle(fakes, FAILED, locked=True) == [
        "dead-letter failed",
        "nak 5.0",
        "release",
        "slot",
    ]


async def test_a_reported_end_is_remembered_and_its_redelivery_only_acked(fakes: Fakes) -> None:
    """The soaks' nats-server restarts: a worker reported a run Succeeded, its ack did not
    arrive, JetStream delivered the run to it again and it ran a second time (Succeeded twice,
    or Succeeded then Cancelled). A worker remembers the runs it reported ended; a redelivery of
    one is acked without a second attempt or report."""
    s = settler(fakes)
    s.settle(cast(Any, fakes.message), SUCCEEDED, result=result(RunState.SUCCEEDED), slot=s.slot())
    await s.aclose()
    assert s.ended == {"r1": RunState.SUCCEEDED}
    retried = RunResult(run_id="r2", attempt=1, state=RunState.RETRYING)
    s.settle(cast(Any, fakes.message), RETRYING, result=retried, slot=s.slot())
    await s.aclose()
    assert "r2" not in s.ended  # not ended: its next attempt runs
    fakes.events.clear()
    s.ack_ended(cast(Any, fakes.message), s.ended["r1"], s.slot())
    await s.aclose()
    assert fakes.events == ["ack", "slot"]  # no report, no attempt
    assert s.unsettled == 0


async def test_the_memory_of_ended_runs_is_bounded(fakes: Fakes) -> None:
    s = settler(fakes)
    for n in range(settling.ENDED_MEMORY + 10):
        s._ended(RunResult(run_id=f"r{n}", attempt=1, state=RunState.SUCCEEDED))
    assert len(s.ended) == settling.ENDED_MEMORY
    assert "r0" not in s.ended
    assert f"r{settling.ENDED_MEMORY + 9}" in s.ended


async def test_a_redelivery_that_took_the_lease_after_its_run_ended_is_acked_and_released(
    fakes: Fakes,
) -> None:
    """Soak seed 2 (after the fix above): a worker frozen past ackWait resumed with the run's
    redelivery already fetched; the redelivery passed the memory check before the first attempt's
    report was stored, then took the Lease the first attempt had just released, and ran the task
    again. The worker looks again once it holds the Lease: the run ended, so it acks the
    redelivery and releases the Lease, without an attempt."""
    s = settler(fakes)
    s._ended(result(RunState.SUCCEEDED))
    s.ack_ended(cast(Any, fakes.message), s.ended["r1"], s.slot(), lock=cast(Any, fakes.lock))
    await s.aclose()
    assert fakes.events == ["ack", "release", "slot"]
