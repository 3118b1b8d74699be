"""Garbage collection paced between bursts: CPython's rule for which generation is due, when
to collect it, and the pacer that does it (with a stand-in collector, and the real one)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

import pytest

from kadence_operator import gcpacer
from kadence_operator.gcpacer import GcPacer
from kadence_operator.scheduling.gcpace import FORCE, MARGIN, PRIOR, Reason, decide, due_generation

THRESHOLDS = (10_000, 10, 10)


@pytest.mark.parametrize(
    ("counts", "pending", "total", "expected"),
    [
        # nothing past its threshold
        ((500, 3, 2), 0, 0, None),
        ((10_000, 10, 10), 0, 0, None),  # CPython collects past the threshold, not at it
        # the young generation
        ((10_001, 3, 2), 0, 0, 0),
        # the middle one (CPython collects the oldest generation due, and the younger with it)
        ((10_001, 11, 2), 0, 0, 1),
        ((0, 11, 2), 0, 0, 1),
        # the oldest, when a quarter as many objects entered it as survived its last collection
        ((10_001, 11, 11), 250, 1000, 2),
        ((10_001, 11, 11), 0, 0, 2),
        # ...not before: the middle one instead
        ((10_001, 11, 11), 249, 1000, 1),
        ((10, 3, 11), 249, 1000, None),
    ],
)
def test_due_generation_follows_cpython(
    counts: tuple[int, int, int], pending: int, total: int, expected: int | None
) -> None:
    assert due_generation(counts, THRESHOLDS, pending=pending, total=total) == expected


def test_a_zero_threshold_means_never() -> None:
    assert due_generation((10**6, 0, 0), (0, 10, 10), pending=0, total=0) is None


@pytest.mark.parametrize(
    ("generation", "counts", "expected", "quiet", "reason"),
    [
        (None, (10**6, 0, 0), 0.01, 10.0, None),
        # a quiet window twice the expected duration: collect now
        (0, (10_001, 0, 0), 0.02, 0.04, Reason.PACED),
        (0, (10_001, 0, 0), 0.02, 0.039, None),
        (1, (0, 11, 0), 0.15, 0.3, Reason.PACED),
        (1, (0, 11, 0), 0.15, 0.0, None),
        # past FORCE times the threshold: now, busy or not
        (0, (FORCE * 10_000 + 1, 0, 0), 0.02, 0.0, Reason.FORCED),
        (0, (FORCE * 10_000, 0, 0), 0.02, 0.0, None),
        (1, (0, FORCE * 10 + 1, 0), 0.15, 0.0, Reason.FORCED),
        (2, (0, 0, FORCE * 10 + 1), 0.5, 0.0, Reason.FORCED),
    ],
)
def test_decide_table(
    generation: int | None,
    counts: tuple[int, int, int],
    expected: float,
    quiet: float,
    reason: Reason | None,
) -> None:
    assert decide(generation, counts, THRESHOLDS, expected=expected, quiet=quiet) == reason


class FakeGc:
    """A collector whose counts the test sets; a collection takes ``took`` seconds of a fake
    clock and resets counts as CPython's does."""

    def __init__(self, counts: Sequence[int]) -> None:
        self.counts = list(counts)
        self.collected: list[int] = []
        self.now = 0.0
        self.took = [0.01, 0.1, 0.4]
        self.old = 0

    def collect(self, generation: int) -> int:
        self.collected.append(generation)
        self.now += self.took[generation]
        if generation + 1 < len(self.counts):
            self.counts[generation + 1] += 1
        for younger in range(generation + 1):
            self.counts[younger] = 0
        return 0

    def pacer(self, quiet: list[float], asked: list[float]) -> GcPacer:
        def quiet_for(seconds: float) -> float:
            asked.append(seconds)
            return quiet[0]

        return GcPacer(
            quiet_for,
            collect=self.collect,
            get_count=lambda: tuple(self.counts),
            get_threshold=lambda: THRESHOLDS,
            old_size=lambda: self.old,
            clock=lambda: self.now,
        )


def test_the_pacer_waits_for_a_quiet_window_and_learns_how_long_collections_take() -> None:
    fake = FakeGc([10_001, 0, 0])
    quiet, asked = [0.0], []
    pacer = fake.pacer(quiet, asked)
    assert pacer.step() is None  # busy: not yet
    assert asked == [PRIOR[0] * MARGIN]  # asked for the prior estimate's window
    quiet[0] = PRIOR[0] * MARGIN
    assert pacer.step() is Reason.PACED
    assert fake.collected == [0]
    assert pacer.expected(0) == pytest.approx(0.01)  # measured, now the estimate
    assert pacer.step() is None  # nothing due any more
    # Busy for a long time: collected anyway once past the bound.
    quiet[0] = 0.0
    fake.counts[0] = FORCE * THRESHOLDS[0] + 1
    assert pacer.step() is Reason.FORCED
    assert fake.collected == [0, 0]
    # The longest recent collection is the estimate.
    fake.took[0] = 0.05
    fake.counts[0] = FORCE * THRESHOLDS[0] + 1
    pacer.step()
    fake.took[0] = 0.001
    fake.counts[0] = FORCE * THRESHOLDS[0] + 1
    pacer.step()
    assert pacer.expected(0) == pytest.approx(0.05)


def test_a_count_that_passed_its_threshold_in_a_burst_is_due_in_the_quiet_after() -> None:
    """The young generation's count is allocations minus deallocations: it passes the threshold
    in a burst (CPython would collect then) and falls back while the burst's objects are freed.
    The collection is still due once the burst is over."""
    fake = FakeGc([THRESHOLDS[0] + 500, 0, 0])
    quiet, asked = [0.0], []
    pacer = fake.pacer(quiet, asked)
    assert pacer.step() is None  # busy
    fake.counts[0] = THRESHOLDS[0] - 3000
    quiet[0] = 1.0
    assert pacer.step() is Reason.PACED
    assert fake.collected == [0]
    # After the collection the peak starts again.
    fake.counts[0] = THRESHOLDS[0] - 1
    assert pacer.step() is None


def test_a_full_collection_waits_for_enough_new_old_objects() -> None:
    fake = FakeGc([0, 0, 11])
    fake.old = 1000  # survivors of the last full collection
    quiet, asked = [10.0], []
    pacer = fake.pacer(quiet, asked)
    fake.old = 1249  # 249 objects entered the oldest generation since: not a quarter
    assert pacer.step() is None
    fake.counts[2] = 12  # another middle collection moved more into it
    fake.old = 1250
    assert pacer.step() is Reason.PACED
    assert fake.collected == [2]
    assert fake.counts == [0, 0, 0]


async def test_running_turns_automatic_collection_off_until_the_last_pacer_stops() -> None:
    assert gc.isenabled()
    stop_one, stop_two = asyncio.Event(), asyncio.Event()
    collected = asyncio.Event()

    def collect(generation: int) -> int:
        collected.set()
        return gc.collect(generation)

    one = GcPacer(lambda seconds: 10.0, tick=0.001, idle_tick=0.001, collect=collect)
    two = GcPacer(lambda seconds: 10.0, tick=0.001, idle_tick=0.001)
    tasks = [asyncio.create_task(one.run(stop_one)), asyncio.create_task(two.run(stop_two))]
    try:
        await asyncio.sleep(0.01)
        assert not gc.isenabled()
        assert gcpacer._running == 2
        # Garbage piles up past the young generation's threshold: the pacer collects it.
        young = gc.get_threshold()[0]
        for _ in range(young + 100):
            cycle: list[object] = []
            cycle.append(cycle)
        async with asyncio.timeout(5):
            await collected.wait()
        stop_one.set()
        await tasks[0]
        assert not gc.isenabled()  # the other one still runs
    finally:
        stop_one.set()
        stop_two.set()
        await asyncio.gather(*tasks)
    assert gc.isenabled()
    assert gcpacer._running == 0


def test_an_idle_operator_is_looked_at_less_often() -> None:
    fake = FakeGc([0, 0, 0])
    pacer = fake.pacer([10.0], [])
    assert pacer.next_tick() == gcpacer.IDLE_TICK
    fake.counts[0] = THRESHOLDS[0] // 2
    assert pacer.next_tick() == gcpacer.TICK
    fake.counts[0] = 10
    assert pacer.next_tick() == gcpacer.IDLE_TICK
    fake.counts[0] = THRESHOLDS[0] // 2
    pacer.step()  # not due, but its highest count is remembered
    fake.counts[0] = 10
    assert pacer.next_tick() == gcpacer.TICK
