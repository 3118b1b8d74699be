"""Spread and jitter delays of ``kadence_operator.scheduling.dispatch``.

The pinned values were computed outside the code under test, with coreutils and bc:

    uid=3f1e9d2a-5b7c-4e8f-9a10-1b2c3d4e5f60
    printf 'kadence/spread/v1\\0%s' $uid | sha256sum        -> 96ba872dec301fd0...
    h = 0x96BA872DEC301FD0 = 10861142082663227344
    interval 1h:  h * 3 600 000 000 // 2**64 = 2 119 621 291 us -> 2 119 621 ms
    5-field cron: h *    60 000 000 // 2**64 =    35 327 021 us ->    35 327 ms
    6-field cron: h *     1 000 000 // 2**64 =       588 783 us ->       588 ms
    printf 'kadence/jitter/v1\\0%s\\0%s' $uid 2026-01-01T00:00:00.000000Z | sha256sum
    jitter 30s:   h' * 30 000 000 // 2**64 = 1 423 449 us
They pin the derivation: changing it would move every Job's dispatch times on upgrade.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from kadence_operator.scheduling import (
    CRON_SECONDS_SPREAD_SPAN,
    CRON_SPREAD_SPAN,
    Schedule,
    Spread,
    dispatch_delay,
    dispatch_time,
    jitter_delay,
    spread_offset,
    spread_span,
)

UID = "3f1e9d2a-5b7c-4e8f-9a10-1b2c3d4e5f60"
H = timedelta(hours=1)
SLOT = datetime(2026, 1, 1, tzinfo=UTC)
# A few hundred distinct, fixed uids.
UIDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"kadence-test-job-{i}")) for i in range(400)]


# (schedule, expected span, pinned offset for UID)
SPREAD_CASES = [
    pytest.param(
        Schedule(interval=H, spread=Spread.HASH),
        H,
        timedelta(milliseconds=2_119_621),
        id="interval-1h",
    ),
    pytest.param(
        Schedule(cron="0 * * * *", spread=Spread.HASH),
        CRON_SPREAD_SPAN,
        timedelta(milliseconds=35_327),
        id="cron-5-fields",
    ),
    pytest.param(
        Schedule(cron="*/10 * * * * *", spread=Spread.HASH),
        CRON_SECONDS_SPREAD_SPAN,
        timedelta(milliseconds=588),
        id="cron-6-fields",
    ),
    pytest.param(Schedule(interval=H), H, timedelta(0), id="spread-none"),
]


@pytest.mark.parametrize(("schedule", "span", "offset"), SPREAD_CASES)
def test_spread_offset_pinned(schedule: Schedule, span: timedelta, offset: timedelta) -> None:
    assert spread_span(schedule) == span
    assert spread_offset(schedule, job_uid=UID) == offset


def test_spread_spans() -> None:
    assert timedelta(minutes=1) == CRON_SPREAD_SPAN
    assert timedelta(seconds=1) == CRON_SECONDS_SPREAD_SPAN


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(Schedule(interval=H, spread=Spread.HASH), id="interval-1h"),
        pytest.param(Schedule(interval=timedelta(seconds=7), spread=Spread.HASH), id="interval-7s"),
        pytest.param(Schedule(cron="0 3 * * *", spread=Spread.HASH), id="cron-daily"),
        pytest.param(Schedule(cron="* * * * * *", spread=Spread.HASH), id="cron-every-second"),
    ],
)
def test_spread_offset_range_and_stability(schedule: Schedule) -> None:
    span = spread_span(schedule)
    offsets = [spread_offset(schedule, job_uid=uid) for uid in UIDS]
    assert all(timedelta(0) <= o < span for o in offsets)
    assert all(o % timedelta(milliseconds=1) == timedelta(0) for o in offsets)
    assert offsets == [spread_offset(schedule, job_uid=uid) for uid in UIDS]


def test_spread_offsets_are_roughly_uniform() -> None:
    # 400 uids over 10 six-minute buckets of the hour: 40 expected per bucket; the bounds are
    # about four standard deviations (sqrt(40 * 0.9) = 6).
    schedule = Schedule(interval=H, spread=Spread.HASH)
    buckets = Counter(spread_offset(schedule, job_uid=uid) // timedelta(minutes=6) for uid in UIDS)
    assert sorted(buckets) == list(range(10))
    assert all(16 <= n <= 64 for n in buckets.values()), buckets
    assert len({spread_offset(schedule, job_uid=uid) for uid in UIDS}) > 390


def test_jitter_pinned() -> None:
    schedule = Schedule(interval=H, jitter=timedelta(seconds=30))
    assert jitter_delay(schedule, job_uid=UID, slot=SLOT) == timedelta(microseconds=1_423_449)
    # The slot's instant matters, not its time zone.
    berlin = datetime.fromisoformat("2026-01-01T01:00:00+01:00")
    assert jitter_delay(schedule, job_uid=UID, slot=berlin) == timedelta(microseconds=1_423_449)


def test_jitter_is_per_slot_bounded_and_deterministic() -> None:
    jitter = timedelta(seconds=30)
    schedule = Schedule(interval=H, jitter=jitter)
    slots = [SLOT + k * H for k in range(300)]
    delays = [jitter_delay(schedule, job_uid=UID, slot=s) for s in slots]
    assert all(timedelta(0) <= d < jitter for d in delays)
    assert delays == [jitter_delay(schedule, job_uid=UID, slot=s) for s in slots]
    assert len(set(delays)) == len(delays)
    # Spread over the range: every 3 s tenth gets some of the 300 slots (30 expected).
    tenths = Counter(d // timedelta(seconds=3) for d in delays)
    assert sorted(tenths) == list(range(10))
    assert all(10 <= n <= 50 for n in tenths.values()), tenths
    # Another Job gets other delays for the same slots.
    other = [jitter_delay(schedule, job_uid=UIDS[0], slot=s) for s in slots]
    assert sum(a == b for a, b in zip(delays, other, strict=True)) < 5


def test_no_jitter_is_zero() -> None:
    assert jitter_delay(Schedule(interval=H), job_uid=UID, slot=SLOT) == timedelta(0)


def test_dispatch_time_adds_spread_and_jitter() -> None:
    schedule = Schedule(interval=H, spread=Spread.HASH, jitter=timedelta(seconds=30))
    delay = timedelta(milliseconds=2_119_621) + timedelta(microseconds=1_423_449)
    assert dispatch_delay(schedule, job_uid=UID, slot=SLOT) == delay
    assert dispatch_time(schedule, job_uid=UID, slot=SLOT) == SLOT + delay


def test_dispatch_time_rejects_naive_slot() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        dispatch_time(Schedule(interval=H), job_uid=UID, slot=datetime(2026, 1, 1))
