"""BurstWatch: when status writes and result folding step aside for a burst of fires."""

from __future__ import annotations

import pytest

from kadence_operator.scheduling.bursts import (
    SETTLE,
    STAGE_LEAD_MAX,
    STAGE_LEAD_MIN,
    BurstWatch,
    stage_lead,
)

T0 = 1_800_000_000.0  # epoch seconds of "now" in these tables


def watch(*dues: float, quiet: float = 0.2, burst: int = 3) -> BurstWatch:
    w = BurstWatch(quiet=quiet, burst=burst)
    for due in dues:
        w.add(T0 + due)
    return w


@pytest.mark.parametrize(
    ("dues", "first", "expected"),
    [
        # three fires due together 0.1 s from now: hold until they are due, plus the settle time
        ((0.1, 0.1, 0.1), 0.1, 0.1 + SETTLE),
        # spread over the quiet window: still one burst
        ((0.05, 0.1, 0.19), 0.05, 0.05 + SETTLE),
        # already due (the loop is behind): hold only for the settle time
        ((-0.02, 0.0, 0.0), -0.02, SETTLE),
        # too few fires in the window: no hold
        ((0.1, 0.1), 0.1, 0.0),
        # the third one falls outside the quiet window
        ((0.1, 0.1, 0.35), 0.1, 0.0),
        # the burst is further away than the quiet window
        ((0.5, 0.5, 0.5), 0.5, 0.0),
    ],
)
def test_hold_table(dues: tuple[float, ...], first: float, expected: float) -> None:
    w = watch(*dues)
    assert w.hold(now=T0, mono=100.0, first=T0 + first) == pytest.approx(expected, abs=1e-6)
    assert w.holds == (1 if expected else 0)


def test_nothing_scheduled_or_quiet_zero_never_holds() -> None:
    assert watch().hold(now=T0, mono=100.0, first=None) == 0.0
    off = watch(0.1, 0.1, 0.1, quiet=0.0)
    assert off.hold(now=T0, mono=100.0, first=T0 + 0.1) == 0.0


def test_a_hold_in_progress_is_shared_then_a_quiet_gap_follows() -> None:
    w = watch(0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 1.2, 1.2, 1.2)
    first = w.hold(now=T0, mono=100.0, first=T0 + 0.1)
    assert first == pytest.approx(0.1 + SETTLE, abs=1e-6)
    # Other callers during the hold wait for what is left of it, not for a new one.
    assert w.hold(now=T0 + 0.05, mono=100.05, first=T0 + 0.1) == pytest.approx(
        0.05 + SETTLE, abs=1e-6
    )
    for _ in range(3):
        w.remove(T0 + 0.1)  # the burst fired
    # Right after the hold: no new one for `quiet` seconds, whatever is due.
    after = 100.0 + first
    assert w.hold(now=T0 + first, mono=after + 0.1, first=T0 + 1.0) == 0.0
    # The next burst (0.85 s later) gets its own hold.
    assert w.hold(now=T0 + 0.85, mono=100.85, first=T0 + 1.0) == pytest.approx(
        0.15 + SETTLE, abs=1e-6
    )
    assert w.holds == 2
    # Bursts closer together than the quiet gap: the one right after a hold is not held.
    for _ in range(3):
        w.remove(T0 + 1.0)
    assert w.hold(now=T0 + 1.1, mono=101.1, first=T0 + 1.2) == 0.0


def test_counts_follow_add_and_remove() -> None:
    w = watch(0.1, 0.1, 0.3)
    assert len(w) == 3
    assert (w.due_at(T0 + 0.1), w.due_at(T0 + 0.3), w.due_at(T0 + 0.2)) == (2, 1, 0)
    assert w.due_within(T0, 0.2, T0 + 0.1) == 2
    w.remove(T0 + 0.1)
    assert w.due_within(T0, 0.2, T0 + 0.1) == 1
    w.remove(T0 + 0.1)
    w.remove(T0 + 0.3)
    assert len(w) == 0
    assert w.due_within(T0, 1.0, T0) == 0


def test_a_schedule_far_behind_counts_every_overdue_fire() -> None:
    w = watch(-3600.0, -1800.0, -0.5, 0.1)
    assert w.due_within(T0, 0.2, T0 - 3600.0) == 4
    assert w.hold(now=T0, mono=5.0, first=T0 - 3600.0) == pytest.approx(SETTLE, abs=1e-6)


@pytest.mark.parametrize(
    ("count", "cost", "expected"),
    [
        # one fire at 50 µs: the floor plus eight times its cost
        (1, 50e-6, STAGE_LEAD_MIN + 400e-6),
        # a thousand fires at 16 µs each: 16 ms of preparation, 128 ms with the margin
        (1000, 16e-6, STAGE_LEAD_MIN + 0.128),
        # a thousand at 25 µs: 200 ms with the margin, within the bound
        (1000, 25e-6, STAGE_LEAD_MIN + 0.2),
        # far more than can be prepared in the bound: the bound
        (100_000, 50e-6, STAGE_LEAD_MAX),
        # nothing measured yet or nothing due: the floor
        (1000, 0.0, STAGE_LEAD_MIN),
        (0, 50e-6, STAGE_LEAD_MIN),
    ],
)
def test_stage_lead_table(count: int, cost: float, expected: float) -> None:
    assert stage_lead(count, cost) == pytest.approx(expected, abs=1e-9)
