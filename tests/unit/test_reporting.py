"""ResultReporter: results that end together go out together, one message in flight per subject."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import nats.errors
import pytest

from kadence.protocol import (
    JobRef,
    RunResult,
    RunState,
    batch_dedupe_id,
    decode_results,
    encode,
)
from kadence.reporting import ResultReporter


def result(run_id: str, job: str = "nightly") -> RunResult:
    return RunResult(
        run_id=run_id,
        attempt=1,
        job=JobRef(namespace="ns", name=job, uid=f"uid-{job}"),
        state=RunState.SUCCEEDED,
        worker="w-1",
    )


def subject_of(r: RunResult) -> str:
    assert r.job is not None
    return f"kadence-results.ns.{r.job.name}"


@dataclass
class FakeStream:
    """Records what is sent; each send waits for ``gate`` and fails while ``failures`` last."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    error: BaseException = field(default_factory=nats.errors.TimeoutError)
    sent: list[tuple[str, bytes, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def send(self, subject: str, payload: bytes, msg_id: str) -> None:
        self.sent.append((subject, payload, msg_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            if self.failures:
                self.failures -= 1
                raise self.error
        finally:
            self.in_flight -= 1

    def run_ids(self, index: int) -> list[str]:
        return [r.run_id for r in decode_results(self.sent[index][1]).results]


def reporter(stream: FakeStream, **kwargs: object) -> ResultReporter:
    return ResultReporter(stream.send, subject=subject_of, retry_delay=0.01, **kwargs)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_result_goes_out_as_itself() -> None:
    stream = FakeStream()
    stream.gate.set()
    sizes: list[int] = []
    r = result("r1")
    await reporter(stream, observe=sizes.append).report(r)
    assert stream.sent == [("kadence-results.ns.nightly", encode(r), r.dedupe_id)]
    assert sizes == [1]


async def test_results_reported_while_one_is_in_flight_go_out_together() -> None:
    stream = FakeStream()
    rep = reporter(stream)
    first = asyncio.create_task(rep.report(result("r0")))
    await settle()
    assert len(stream.sent) == 1  # r0 is in flight, waiting for its PubAck
    rest = [asyncio.create_task(rep.report(result(f"r{i}"))) for i in range(1, 6)]
    await settle()
    assert len(stream.sent) == 1
    assert not any(t.done() for t in rest)
    stream.gate.set()
    await asyncio.gather(first, *rest)
    assert len(stream.sent) == 2
    assert stream.run_ids(1) == ["r1", "r2", "r3", "r4", "r5"]
    ids = [result(f"r{i}").dedupe_id for i in range(1, 6)]
    assert stream.sent[1][2] == batch_dedupe_id(ids)
    assert (rep.messages, rep.results) == (2, 6)


async def test_results_of_one_loop_iteration_share_a_message() -> None:
    stream = FakeStream()
    stream.gate.set()
    rep = reporter(stream)
    await asyncio.gather(*(rep.report(result(f"r{i}")) for i in range(4)))
    assert len(stream.sent) == 1
    assert stream.run_ids(0) == ["r0", "r1", "r2", "r3"]


async def test_each_subject_has_its_own_message_in_flight() -> None:
    stream = FakeStream()
    rep = reporter(stream)
    tasks = [
        asyncio.create_task(rep.report(result(f"{job}-{i}", job))) for job in "ab" for i in (1, 2)
    ]
    await settle()
    # Both Jobs' results are on their way at once: one Job never waits for another's PubAck.
    assert stream.in_flight == 2
    assert sorted(s for s, _, _ in stream.sent) == ["kadence-results.ns.a", "kadence-results.ns.b"]
    stream.gate.set()
    await asyncio.gather(*tasks)
    assert stream.most_in_flight == 2
    by_subject = {s: [r.run_id for r in decode_results(p).results] for s, p, _ in stream.sent}
    assert by_subject == {
        "kadence-results.ns.a": ["a-1", "a-2"],
        "kadence-results.ns.b": ["b-1", "b-2"],
    }


@pytest.mark.parametrize(
    ("limits", "sizes"),
    [
        ({"max_batch": 3}, [3, 3, 1]),
        ({"max_batch": 100, "max_bytes": 2 * len(encode(result("r0"))) + 1}, [2, 2, 2, 1]),
        ({"max_batch": 100, "max_bytes": 10}, [1, 1, 1, 1, 1, 1, 1]),  # one too big goes alone
    ],
)
async def test_a_message_stays_within_its_limits(limits: dict[str, int], sizes: list[int]) -> None:
    stream = FakeStream()
    stream.gate.set()
    rep = reporter(stream, **limits)
    await asyncio.gather(*(rep.report(result(f"r{i}")) for i in range(7)))
    assert [len(decode_results(p).results) for _, p, _ in stream.sent] == sizes
    assert [r for i in range(len(sizes)) for r in stream.run_ids(i)] == [f"r{i}" for i in range(7)]


async def test_a_failed_message_is_sent_again_as_it_was() -> None:
    stream = FakeStream(failures=2)
    stream.gate.set()
    rep = reporter(stream, tries=3)
    await asyncio.gather(*(rep.report(result(f"r{i}")) for i in range(3)))
    assert len(stream.sent) == 3
    assert len({(p, msg_id) for _, p, msg_id in stream.sent}) == 1  # same bytes, same Nats-Msg-Id


async def test_every_run_of_a_message_that_keeps_failing_gets_the_error() -> None:
    stream = FakeStream(failures=10)
    stream.gate.set()
    rep = reporter(stream, tries=2)
    outcomes = await asyncio.gather(
        *(rep.report(result(f"r{i}")) for i in range(3)), return_exceptions=True
    )
    assert len(stream.sent) == 2
    assert all(isinstance(o, nats.errors.TimeoutError) for o in outcomes)
    # The reporter goes on: the next result is sent.
    stream.failures = 0
    await rep.report(result("r9"))
    assert stream.run_ids(-1) == ["r9"]


async def test_a_caller_given_up_on_does_not_stop_the_others() -> None:
    stream = FakeStream()
    rep = reporter(stream)
    first = asyncio.create_task(rep.report(result("r0")))
    await settle()
    gone = asyncio.create_task(rep.report(result("r1")))
    kept = asyncio.create_task(rep.report(result("r2")))
    await settle()
    gone.cancel()
    stream.gate.set()
    await asyncio.gather(first, kept)
    # r1 was reported before its caller gave up: it is stored all the same.
    assert stream.run_ids(1) == ["r1", "r2"]
    await rep.aclose()


async def test_an_unexpected_error_reaches_the_runs_of_its_message() -> None:
    stream = FakeStream(failures=1, error=RuntimeError("bug"))
    stream.gate.set()
    rep = reporter(stream)
    with pytest.raises(RuntimeError, match="bug"):
        await rep.report(result("r0"))
    await rep.aclose()
    stream.gate.set()
    await rep.report(result("r1"))  # and the next report still goes out
    assert stream.run_ids(-1) == ["r1"]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ResultReporter(FakeStream().send, subject=subject_of, max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        ResultReporter(FakeStream().send, subject=subject_of, tries=0)


async def test_submitted_results_call_back_once_stored_and_share_a_message() -> None:
    """submit(): no future per result; the callback runs once the message is stored (never
    inside submit), and submitted and awaited results of one Job share a message."""
    stream = FakeStream()
    rep = reporter(stream)
    told: list[tuple[str, BaseException | None]] = []
    first = asyncio.create_task(rep.report(result("r0")))
    await settle()
    for i in (1, 2):
        rep.submit(result(f"r{i}"), lambda error, i=i: told.append((f"r{i}", error)))
    waited = asyncio.create_task(rep.report(result("r3")))
    assert told == []
    await settle()
    assert told == []  # r0's PubAck is not back: r1 and r2 wait for the next message
    stream.gate.set()
    await asyncio.gather(first, waited)
    assert told == [("r1", None), ("r2", None)]
    assert stream.run_ids(1) == ["r1", "r2", "r3"]


async def test_submitted_results_are_told_the_error_and_a_raising_callback_is_contained() -> None:
    stream = FakeStream(failures=10)
    stream.gate.set()
    rep = reporter(stream, tries=2)
    told: list[BaseException | None] = []

    def broken(error: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    rep.submit(result("r0"), broken)
    rep.submit(result("r1"), told.append)
    await rep.aclose()
    assert len(stream.sent) == 2  # both tries of one message
    assert len(told) == 1
    assert isinstance(told[0], nats.errors.TimeoutError)


async def test_a_cancelled_reporter_tells_submitted_results() -> None:
    stream = FakeStream()
    rep = reporter(stream)
    told: list[BaseException | None] = []
    rep.submit(result("r0"), told.append)
    await settle()
    for task in list(rep._tasks):
        task.cancel()
    await asyncio.gather(*rep._tasks, return_exceptions=True)
    assert len(told) == 1
    assert isinstance(told[0], asyncio.CancelledError)
