"""Catch-up and overlap decisions of ``kadence_operator.scheduling.policy``, as tables.

The catch-up cases share one outage: the last slot handled is 2026-01-01T00:00Z and the operator
comes back at 2026-01-04T00:30Z. With hourly slots (interval 1h anchored at the epoch, or cron
``0 * * * *`` in UTC: the same slots) 72 slots were due, 2026-01-01T01:00Z .. 2026-01-04T00:00Z,
and the newest is 30 minutes late, well past the default 60 s grace.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadence_operator.scheduling import (
    DEFAULT_GRACE,
    MISSED_COUNT_LIMIT,
    CatchUpDecision,
    CatchUpPolicy,
    ConcurrencyPolicy,
    OverlapAction,
    OverlapDecision,
    PlannedSlot,
    Schedule,
    Spread,
    decide_overlap,
    dispatch_time,
    next_fire_time,
    plan_catch_up,
    plan_slot,
    runs_alone,
    runs_alone_during,
)

H = timedelta(hours=1)
UID = "3f1e9d2a-5b7c-4e8f-9a10-1b2c3d4e5f60"


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def hourly(first: str, n: int) -> list[datetime]:
    """``n`` hourly slots starting at ``first`` (the expected lists are ranges)."""
    start = z(first)
    return [start + k * H for k in range(n)]


def every_second(first: str, n: int) -> list[datetime]:
    start = z(first)
    return [start + timedelta(seconds=k) for k in range(n)]


HOURLY_SCHEDULES = [
    pytest.param(Schedule(interval=H), id="interval-1h"),
    pytest.param(Schedule(cron="0 * * * *"), id="cron-hourly"),
]

LAST = "2026-01-01T00:00:00Z"
BACK = "2026-01-04T00:30:00Z"

# (last_slot, now, policy, extra kwargs, expected decision)
CATCH_UP_CASES = [
    # --- a 3-day outage -------------------------------------------------------------------------
    pytest.param(
        LAST,
        BACK,
        CatchUpPolicy.NONE,
        {},
        CatchUpDecision(to_run=[], missed=72, last_slot=z("2026-01-04T00:00:00Z")),
        id="none",
    ),
    pytest.param(
        LAST,
        BACK,
        CatchUpPolicy.ONE,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1), missed=71, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="one",
    ),
    pytest.param(
        # 00:00 is 30 min old, inside a 6 h window.
        LAST,
        BACK,
        CatchUpPolicy.ONE,
        {"window": 6 * H},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1), missed=71, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="one-window-6h",
    ),
    pytest.param(
        # 00:00 is 30 min old, outside a 10 min window: nothing runs.
        LAST,
        BACK,
        CatchUpPolicy.ONE,
        {"window": timedelta(minutes=10)},
        CatchUpDecision(to_run=[], missed=72, last_slot=z("2026-01-04T00:00:00Z")),
        id="one-window-10m",
    ),
    pytest.param(
        LAST,
        BACK,
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-01T01:00:00Z", 72), missed=0, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="all",
    ),
    pytest.param(
        # now - 6 h = 2026-01-03T18:30Z: 19:00, 20:00, 21:00, 22:00, 23:00, 00:00 run; 66 missed.
        LAST,
        BACK,
        CatchUpPolicy.ALL,
        {"window": 6 * H},
        CatchUpDecision(
            to_run=hourly("2026-01-03T19:00:00Z", 6), missed=66, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="all-window-6h",
    ),
    pytest.param(
        # The window bound is inclusive: now - 30 min = 00:00 exactly.
        LAST,
        BACK,
        CatchUpPolicy.ALL,
        {"window": timedelta(minutes=30)},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1), missed=71, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="all-window-inclusive",
    ),
    pytest.param(
        LAST,
        BACK,
        CatchUpPolicy.ALL,
        {"window": timedelta(0)},
        CatchUpDecision(to_run=[], missed=72, last_slot=z("2026-01-04T00:00:00Z")),
        id="all-window-zero",
    ),
    pytest.param(
        # 5 days: 120 due; the latest 100 run (slots 21..120 = 2026-01-01T21:00Z .. 01-06T00:00Z).
        LAST,
        "2026-01-06T00:30:00Z",
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-01T21:00:00Z", 100),
            missed=20,
            last_slot=z("2026-01-06T00:00:00Z"),
        ),
        id="all-capped-at-100",
    ),
    pytest.param(
        LAST,
        BACK,
        CatchUpPolicy.ALL,
        {"cap": 3},
        CatchUpDecision(
            to_run=hourly("2026-01-03T22:00:00Z", 3), missed=69, last_slot=z("2026-01-04T00:00:00Z")
        ),
        id="all-custom-cap",
    ),
    # --- the newest slot on time (30 s late, default grace 60 s) -----------------------------
    pytest.param(
        LAST,
        "2026-01-04T00:00:30Z",
        CatchUpPolicy.NONE,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1),
            missed=71,
            last_slot=z("2026-01-04T00:00:00Z"),
            on_time=z("2026-01-04T00:00:00Z"),
        ),
        id="none-on-time-slot-runs",
    ),
    pytest.param(
        # The on-time run is the one run: no extra late run.
        LAST,
        "2026-01-04T00:00:30Z",
        CatchUpPolicy.ONE,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1),
            missed=71,
            last_slot=z("2026-01-04T00:00:00Z"),
            on_time=z("2026-01-04T00:00:00Z"),
        ),
        id="one-on-time-slot-is-the-one",
    ),
    pytest.param(
        LAST,
        "2026-01-04T00:00:30Z",
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-01T01:00:00Z", 72),
            missed=0,
            last_slot=z("2026-01-04T00:00:00Z"),
            on_time=z("2026-01-04T00:00:00Z"),
        ),
        id="all-with-on-time-slot",
    ),
    pytest.param(
        # With grace 0 the same slot is late: policy None drops it.
        LAST,
        "2026-01-04T00:00:30Z",
        CatchUpPolicy.NONE,
        {"grace": timedelta(0)},
        CatchUpDecision(to_run=[], missed=72, last_slot=z("2026-01-04T00:00:00Z")),
        id="none-grace-zero",
    ),
    # --- ordinary ticks -----------------------------------------------------------------------
    pytest.param(
        "2026-01-03T23:00:00Z",
        "2026-01-04T00:00:00.200000Z",
        CatchUpPolicy.NONE,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1),
            missed=0,
            last_slot=z("2026-01-04T00:00:00Z"),
            on_time=z("2026-01-04T00:00:00Z"),
        ),
        id="tick-on-time",
    ),
    pytest.param(
        "2026-01-04T00:00:00Z",
        BACK,
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(to_run=[], missed=0, last_slot=z("2026-01-04T00:00:00Z")),
        id="nothing-due",
    ),
    pytest.param(
        # A last slot in the future (clock skew): nothing due, last slot kept.
        "2026-01-05T00:00:00Z",
        BACK,
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(to_run=[], missed=0, last_slot=z("2026-01-05T00:00:00Z")),
        id="last-slot-in-future",
    ),
    # --- never handled ------------------------------------------------------------------------
    pytest.param(
        None,
        BACK,
        CatchUpPolicy.ALL,
        {},
        CatchUpDecision(to_run=[], missed=0, last_slot=None),
        id="never-handled-nothing-on-time",
    ),
    pytest.param(
        None,
        "2026-01-04T00:00:30Z",
        CatchUpPolicy.NONE,
        {},
        CatchUpDecision(
            to_run=hourly("2026-01-04T00:00:00Z", 1),
            missed=0,
            last_slot=z("2026-01-04T00:00:00Z"),
            on_time=z("2026-01-04T00:00:00Z"),
        ),
        id="never-handled-on-time",
    ),
]


@pytest.mark.parametrize("schedule", HOURLY_SCHEDULES)
@pytest.mark.parametrize(("last", "now", "policy", "kwargs", "expected"), CATCH_UP_CASES)
def test_plan_catch_up(
    schedule: Schedule,
    last: str | None,
    now: str,
    policy: CatchUpPolicy,
    kwargs: dict[str, Any],
    expected: CatchUpDecision,
) -> None:
    decision = plan_catch_up(
        schedule,
        job_uid=UID,
        last_slot=None if last is None else z(last),
        now=z(now),
        policy=policy,
        **kwargs,
    )
    assert decision == expected


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        pytest.param(
            LAST,
            "2026-01-04T00:00:30Z",
            CatchUpDecision(missed=72, last_slot=z("2026-01-04T00:00:00Z")),
            id="late-and-on-time",
        ),
        pytest.param(
            None,
            "2026-01-04T00:00:30Z",
            CatchUpDecision(missed=1, last_slot=z("2026-01-04T00:00:00Z")),
            id="never-handled",
        ),
    ],
)
def test_catch_up_cap_zero_runs_nothing(
    last: str | None, now: str, expected: CatchUpDecision
) -> None:
    decision = plan_catch_up(
        Schedule(interval=H),
        job_uid=UID,
        last_slot=None if last is None else z(last),
        now=z(now),
        policy=CatchUpPolicy.ALL,
        cap=0,
    )
    assert decision == expected


def test_catch_up_accepts_policy_strings() -> None:
    decision = plan_catch_up(
        Schedule(interval=H),
        job_uid=UID,
        last_slot=z(LAST),
        now=z(BACK),
        policy="One",  # type: ignore[arg-type]
    )
    assert decision.to_run == hourly("2026-01-04T00:00:00Z", 1)


@pytest.mark.timeout(10)
def test_catch_up_interval_outage_is_arithmetic() -> None:
    # 30 days of one-second slots = 2 592 000 due; only the latest 100 are materialised:
    # 2026-01-30T23:58:21Z .. 2026-01-31T00:00:00Z. grace 0 makes 00:00:00 (0.5 s old) late.
    decision = plan_catch_up(
        Schedule(interval=timedelta(seconds=1)),
        job_uid=UID,
        last_slot=z("2026-01-01T00:00:00Z"),
        now=z("2026-01-31T00:00:00.500000Z"),
        policy=CatchUpPolicy.ALL,
        grace=timedelta(0),
    )
    assert decision == CatchUpDecision(
        to_run=every_second("2026-01-30T23:58:21Z", 100),
        missed=2_592_000 - 100,
        missed_saturated=False,
        last_slot=z("2026-01-31T00:00:00Z"),
    )


@pytest.mark.timeout(10)
def test_catch_up_cron_outage_saturates() -> None:
    # One day of one-second cron slots: counting stops at MISSED_COUNT_LIMIT late slots.
    decision = plan_catch_up(
        Schedule(cron="* * * * * *"),
        job_uid=UID,
        last_slot=z("2026-01-01T00:00:00Z"),
        now=z("2026-01-02T00:00:00.500000Z"),
        policy=CatchUpPolicy.ALL,
        grace=timedelta(0),
    )
    assert decision == CatchUpDecision(
        to_run=every_second("2026-01-01T23:58:21Z", 100),
        missed=MISSED_COUNT_LIMIT - 100,
        missed_saturated=True,
        last_slot=z("2026-01-02T00:00:00Z"),
    )


def test_catch_up_cron_dst_outage() -> None:
    # Berlin hourly cron, down across the fall-back night: local 2026-10-25 00:00 CEST (22:00Z)
    # to 06:30 CET (05:30Z). Due wall times 01:00 .. 06:00 = 6 slots (the repeated 02:00 is
    # none): 23:00Z, 00:00Z, 02:00Z, 03:00Z, 04:00Z, 05:00Z.
    decision = plan_catch_up(
        Schedule(cron="0 * * * *", time_zone="Europe/Berlin"),
        job_uid=UID,
        last_slot=z("2026-10-24T22:00:00Z"),
        now=z("2026-10-25T05:30:00Z"),
        policy=CatchUpPolicy.ALL,
    )
    expected = [z("2026-10-24T23:00:00Z"), z("2026-10-25T00:00:00Z")]
    expected += hourly("2026-10-25T02:00:00Z", 4)
    assert decision == CatchUpDecision(to_run=expected, missed=0, last_slot=expected[-1])


def test_on_time_is_measured_from_the_dispatch_time() -> None:
    # With spread the healthy loop reaches a slot at slot + offset (up to the interval); that
    # is on time, not a missed slot.
    schedule = Schedule(interval=H, spread=Spread.HASH)
    slot = z("2026-01-04T00:00:00Z")
    decision = plan_catch_up(
        schedule,
        job_uid=UID,
        last_slot=z("2026-01-03T23:00:00Z"),
        now=dispatch_time(schedule, job_uid=UID, slot=slot) + timedelta(seconds=5),
        policy=CatchUpPolicy.NONE,
    )
    assert decision == CatchUpDecision(to_run=[slot], missed=0, last_slot=slot, on_time=slot)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cap": -1}, id="cap"),
        pytest.param({"grace": timedelta(seconds=-1)}, id="grace"),
        pytest.param({"window": timedelta(seconds=-1)}, id="window"),
    ],
)
def test_catch_up_rejects_negative_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_catch_up(
            Schedule(interval=H),
            job_uid=UID,
            last_slot=z(LAST),
            now=z(BACK),
            policy=CatchUpPolicy.ALL,
            **kwargs,
        )


# --- overlap ----------------------------------------------------------------------------------

A = OverlapAction
P = ConcurrencyPolicy

# (policy, active, buffered, expected)
OVERLAP_CASES = [
    pytest.param(P.ALLOW, 0, 0, OverlapDecision(A.DISPATCH), id="allow-idle"),
    pytest.param(P.ALLOW, 3, 0, OverlapDecision(A.DISPATCH), id="allow-busy"),
    pytest.param(P.FORBID, 0, 0, OverlapDecision(A.DISPATCH), id="forbid-idle"),
    pytest.param(P.FORBID, 1, 0, OverlapDecision(A.SKIP, skipped=1), id="forbid-busy"),
    pytest.param(P.BUFFER_ONE, 0, 0, OverlapDecision(A.DISPATCH), id="buffer-one-idle"),
    pytest.param(P.BUFFER_ONE, 1, 0, OverlapDecision(A.BUFFER), id="buffer-one-busy"),
    pytest.param(P.BUFFER_ONE, 1, 1, OverlapDecision(A.SKIP, skipped=1), id="buffer-one-full"),
    pytest.param(
        P.BUFFER_ONE,
        2,
        3,
        OverlapDecision(A.SKIP, drop_buffered=2, skipped=3),
        id="buffer-one-overfull",
    ),
    pytest.param(
        P.BUFFER_ONE,
        0,
        1,
        OverlapDecision(A.DISPATCH, drop_buffered=1, skipped=1),
        id="buffer-one-stale-pending",
    ),
    pytest.param(P.REPLACE, 0, 0, OverlapDecision(A.DISPATCH), id="replace-idle"),
    pytest.param(P.REPLACE, 2, 0, OverlapDecision(A.REPLACE, cancel=2), id="replace-busy"),
    # Leftover pending slots after a policy change away from BufferOne are dropped.
    pytest.param(
        P.FORBID,
        1,
        1,
        OverlapDecision(A.SKIP, drop_buffered=1, skipped=2),
        id="forbid-leftover-pending",
    ),
    pytest.param(
        P.ALLOW,
        0,
        1,
        OverlapDecision(A.DISPATCH, drop_buffered=1, skipped=1),
        id="allow-leftover-pending",
    ),
    pytest.param(
        P.REPLACE,
        1,
        1,
        OverlapDecision(A.REPLACE, cancel=1, drop_buffered=1, skipped=1),
        id="replace-leftover-pending",
    ),
]


@pytest.mark.parametrize(("policy", "active", "buffered", "expected"), OVERLAP_CASES)
def test_decide_overlap(
    policy: ConcurrencyPolicy, active: int, buffered: int, expected: OverlapDecision
) -> None:
    assert decide_overlap(policy, active=active, buffered=buffered) == expected


def test_decide_overlap_accepts_crd_strings() -> None:
    decision = decide_overlap("BufferOne", active=1, buffered=0)  # type: ignore[arg-type]
    assert decision.action is OverlapAction.BUFFER


@pytest.mark.parametrize(("active", "buffered"), [(-1, 0), (0, -1)])
def test_decide_overlap_rejects_negative_counts(active: int, buffered: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        decide_overlap(ConcurrencyPolicy.ALLOW, active=active, buffered=buffered)


def test_vocabularies_match_the_crd() -> None:
    assert [p.value for p in ConcurrencyPolicy] == ["Allow", "Forbid", "BufferOne", "Replace"]
    assert [p.value for p in CatchUpPolicy] == ["None", "One", "All"]
    assert [s.value for s in Spread] == ["none", "hash"]


# -- planned slots -------------------------------------------------------------------------------

S = timedelta(seconds=1)
T0 = z("2026-03-29T00:59:58Z")  # two seconds before Europe/Berlin's clocks jump


@pytest.mark.parametrize(
    ("schedule", "last", "slot", "expected"),
    [
        pytest.param(
            Schedule(interval=S),
            T0,
            T0 + S,
            PlannedSlot(slot=T0 + S, due=T0 + S, after=T0, following=T0 + 2 * S),
            id="interval",
        ),
        pytest.param(Schedule(interval=S), T0, T0 + 2 * S, None, id="a-slot-in-between"),
        pytest.param(Schedule(interval=S), None, T0 + S, None, id="never-handled"),
        pytest.param(
            Schedule(interval=S, end_at=T0 + S),
            T0,
            T0 + S,
            PlannedSlot(slot=T0 + S, due=T0 + S, after=T0, following=None),
            id="last-slot-before-end-at",
        ),
        pytest.param(
            Schedule(cron="0 * * * *", time_zone="Europe/Berlin"),
            z("2026-03-29T00:00:00Z"),  # 01:00 CET; 02:00 does not exist that night
            z("2026-03-29T01:00:00Z"),  # 03:00 CEST
            PlannedSlot(
                slot=z("2026-03-29T01:00:00Z"),
                due=z("2026-03-29T01:00:00Z"),
                after=z("2026-03-29T00:00:00Z"),
                following=z("2026-03-29T02:00:00Z"),
            ),
            id="cron-across-the-dst-gap",
        ),
    ],
)
def test_plan_slot(
    schedule: Schedule, last: datetime | None, slot: datetime, expected: PlannedSlot | None
) -> None:
    assert plan_slot(schedule, job_uid=UID, last_slot=last, slot=slot) == expected


PLANNED = PlannedSlot(slot=T0 + S, due=T0 + S, after=T0, following=T0 + 2 * S)


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        pytest.param(T0, T0 + S, True, id="at-the-slot"),
        pytest.param(T0, T0 + 1.9 * S, True, id="late-within-the-slot"),
        pytest.param(T0, T0 + 2 * S, False, id="the-following-slot-is-due"),
        pytest.param(T0, T0 + 0.5 * S, False, id="not-due-yet"),
        pytest.param(T0 - S, T0 + S, False, id="an-older-last-slot"),
        pytest.param(T0 + S, T0 + S, False, id="already-handled"),
        pytest.param(None, T0 + S, False, id="last-slot-unknown"),
    ],
)
def test_runs_alone(last: datetime | None, now: datetime, expected: bool) -> None:
    assert runs_alone(PLANNED, last_slot=last, now=now) is expected


def test_runs_alone_respects_the_grace() -> None:
    planned = PlannedSlot(slot=T0, due=T0, after=T0 - H, following=T0 + H)
    assert runs_alone(planned, last_slot=T0 - H, now=T0 + timedelta(seconds=60))
    assert not runs_alone(planned, last_slot=T0 - H, now=T0 + timedelta(seconds=61))


@pytest.mark.parametrize(
    ("planned", "expected"),
    [
        pytest.param(PLANNED, (T0 + S, T0 + 2 * S), id="until-the-following-slot"),
        pytest.param(
            PlannedSlot(slot=T0, due=T0, after=T0 - H, following=T0 + H),
            (T0, T0 + timedelta(seconds=60, microseconds=1)),
            id="until-the-grace-ends",
        ),
        pytest.param(
            PlannedSlot(slot=T0, due=T0 + 5 * S, after=T0 - H, following=None),
            (T0 + 5 * S, T0 + timedelta(seconds=65, microseconds=1)),
            id="last-slot-delayed-by-spread",
        ),
    ],
)
def test_runs_alone_during(planned: PlannedSlot, expected: tuple[datetime, datetime]) -> None:
    assert runs_alone_during(planned) == expected


@given(
    due=st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=2)),
    following=st.one_of(
        st.none(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=3))
    ),
    now=st.timedeltas(min_value=timedelta(seconds=-10), max_value=timedelta(minutes=4)),
)
def test_runs_alone_during_agrees_with_runs_alone(
    due: timedelta, following: timedelta | None, now: timedelta
) -> None:
    planned = PlannedSlot(
        slot=T0,
        due=T0 + due,
        after=T0 - S,
        following=None if following is None else T0 + following,
    )
    start, end = runs_alone_during(planned)
    at = T0 + now
    assert runs_alone(planned, last_slot=T0 - S, now=at) is (start <= at < end)


SCHEDULES = st.sampled_from(
    [
        Schedule(interval=S),
        Schedule(interval=timedelta(seconds=7), spread=Spread.HASH),
        Schedule(interval=timedelta(minutes=5), jitter=timedelta(seconds=90)),
        Schedule(cron="*/10 * * * * *"),
        Schedule(cron="30 1-3 * * *", time_zone="Europe/Berlin"),
        Schedule(cron="0 * * * *", time_zone="America/New_York", spread=Spread.HASH),
    ]
)


@given(
    schedule=SCHEDULES,
    policy=st.sampled_from(list(CatchUpPolicy)),
    window=st.sampled_from([None, timedelta(0), timedelta(seconds=30), H]),
    start=st.datetimes(
        min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30), timezones=st.just(UTC)
    ),
    skip=st.integers(min_value=0, max_value=2),
    offset=st.one_of(
        st.timedeltas(min_value=timedelta(seconds=-5), max_value=timedelta(seconds=2)),
        st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=3)),
    ),
)
def test_runs_alone_agrees_with_plan_catch_up(
    schedule: Schedule,
    policy: CatchUpPolicy,
    window: timedelta | None,
    start: datetime,
    skip: int,
    offset: timedelta,
) -> None:
    """Whenever a planned slot runs alone, the full catch-up decision is exactly that slot."""
    last = next_fire_time(schedule, after=start)
    assert last is not None
    slot = last
    for _ in range(skip + 1):
        following = next_fire_time(schedule, after=slot)
        assert following is not None
        slot = following
    planned = plan_slot(schedule, job_uid=UID, last_slot=last, slot=slot)
    assert (planned is None) == (skip > 0)
    if planned is None:
        return
    now = planned.due + offset
    decision = plan_catch_up(
        schedule, job_uid=UID, last_slot=last, now=now, policy=policy, window=window
    )
    if runs_alone(planned, last_slot=last, now=now):
        assert decision == CatchUpDecision(to_run=[slot], last_slot=slot, on_time=slot)
    elif now >= planned.due and (planned.following is None or now < planned.following):
        # Due, the following slot not yet: only lateness beyond the grace stops it.
        assert now - planned.due > DEFAULT_GRACE
