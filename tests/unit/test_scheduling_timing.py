"""Slot arithmetic of ``kadence_operator.scheduling.timing``, as tables (in the style of arq's
``next_cron`` tests): every expected value is worked out by hand in the comment next to it.

DST facts used below (2026):
  Europe/Berlin     CET +01 -> CEST +02 on 2026-03-29 at 01:00Z (02:00 -> 03:00 local),
                    CEST +02 -> CET +01 on 2026-10-25 at 01:00Z (03:00 -> 02:00 local).
  America/New_York  EST -05 -> EDT -04 on 2026-03-08 at 07:00Z (02:00 -> 03:00 local),
                    EDT -04 -> EST -05 on 2026-11-01 at 06:00Z (02:00 -> 01:00 local).
  2026-01-01 is a Thursday; 2026-01-01T00:00:00Z is Unix time 1 767 225 600.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kadence_operator.scheduling import (
    EPOCH,
    Schedule,
    backfill_slots,
    count_fire_times,
    fire_times_between,
    interval_anchor,
    latest_fire_times,
    next_fire_time,
    next_fire_times,
    previous_fire_time,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
H = timedelta(hours=1)


def z(text: str) -> datetime:
    """An aware UTC datetime from ``2026-01-01T00:00:00Z``-style text."""
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None
    return value.astimezone(UTC)


def zs(*texts: str) -> list[datetime]:
    return [z(t) for t in texts]


# (schedule kwargs, after, count, expected)
NEXT_FIRE_CASES = [
    # --- intervals, anchored at the Unix epoch ------------------------------------------------
    pytest.param(
        {"interval": H},
        "2026-01-01T00:30:00Z",
        3,
        zs("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z"),
        id="interval-1h-epoch",
    ),
    pytest.param(
        # 1 767 225 600 = 660 * 2 677 614 + 360: the slot before is 23:54, the next one 00:05.
        {"interval": timedelta(minutes=11)},
        "2026-01-01T00:00:00Z",
        3,
        zs("2026-01-01T00:05:00Z", "2026-01-01T00:16:00Z", "2026-01-01T00:27:00Z"),
        id="interval-11m-epoch-phase",
    ),
    pytest.param(
        # 1 767 225 600 = 420 * 4 207 680: 00:00 is itself a slot, and 'after' is exclusive.
        {"interval": timedelta(minutes=7)},
        "2026-01-01T00:00:00Z",
        2,
        zs("2026-01-01T00:07:00Z", "2026-01-01T00:14:00Z"),
        id="interval-after-is-exclusive",
    ),
    pytest.param(
        {"interval": timedelta(days=1)},
        "2026-05-17T13:00:00Z",
        2,
        zs("2026-05-18T00:00:00Z", "2026-05-19T00:00:00Z"),
        id="interval-1d-epoch-midnight-utc",
    ),
    pytest.param(
        {"interval": timedelta(days=1), "time_zone": BERLIN},
        "2026-10-24T12:00:00Z",
        2,
        zs("2026-10-25T00:00:00Z", "2026-10-26T00:00:00Z"),
        id="interval-ignores-time-zone",
    ),
    pytest.param(
        # Absolute hours straight through the Berlin fall-back: 02:00 CEST, 02:00 CET, 03:00 CET.
        {"interval": H, "time_zone": BERLIN},
        "2026-10-24T23:30:00Z",
        3,
        zs("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"),
        id="interval-ignores-dst",
    ),
    # --- intervals, anchored at start_at / the creation time ---------------------------------
    pytest.param(
        {"interval": H, "start_at": z("2026-01-01T00:00:10Z")},
        "2026-03-01T05:00:00Z",
        2,
        zs("2026-03-01T05:00:10Z", "2026-03-01T06:00:10Z"),
        id="interval-start-at-anchor",
    ),
    pytest.param(
        # Nothing before start_at; start_at itself is the first slot (inclusive bound).
        {"interval": H, "start_at": z("2026-01-01T00:30:00Z")},
        "2025-12-31T00:00:00Z",
        3,
        zs("2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z", "2026-01-01T02:30:00Z"),
        id="interval-start-at-in-future",
    ),
    pytest.param(
        # end_at is inclusive: 02:30 fires, then nothing (5 asked, 3 exist).
        {
            "interval": H,
            "start_at": z("2026-01-01T00:30:00Z"),
            "end_at": z("2026-01-01T02:30:00Z"),
        },
        "2025-12-31T00:00:00Z",
        5,
        zs("2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z", "2026-01-01T02:30:00Z"),
        id="interval-end-at-inclusive",
    ),
    pytest.param(
        {"interval": H, "end_at": z("2026-01-01T02:00:00Z")},
        "2026-01-01T02:00:00Z",
        3,
        [],
        id="interval-after-end-at",
    ),
    pytest.param(
        # 04:05:06 + k * 1h30: ... 11:35:06, 13:05:06, 14:35:06.
        {"interval": timedelta(minutes=90), "anchor": z("2026-02-03T04:05:06Z")},
        "2026-02-03T12:00:00Z",
        2,
        zs("2026-02-03T13:05:06Z", "2026-02-03T14:35:06Z"),
        id="interval-creation-anchor",
    ),
    pytest.param(
        # The creation anchor is only a phase: 04:05:06 - 2 * 1h30 = 01:05:06.
        {"interval": timedelta(minutes=90), "anchor": z("2026-02-03T04:05:06Z")},
        "2026-02-03T00:00:00Z",
        3,
        zs("2026-02-03T01:05:06Z", "2026-02-03T02:35:06Z", "2026-02-03T04:05:06Z"),
        id="interval-creation-anchor-is-no-bound",
    ),
    pytest.param(
        # start_at wins over the creation anchor.
        {
            "interval": H,
            "anchor": z("2026-02-03T04:05:06Z"),
            "start_at": z("2026-02-03T00:00:00Z"),
        },
        "2026-02-03T04:00:00Z",
        1,
        zs("2026-02-03T05:00:00Z"),
        id="interval-start-at-beats-anchor",
    ),
    # --- cron in UTC --------------------------------------------------------------------------
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T10:00:00Z",
        2,
        zs("2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"),
        id="cron-hourly-after-is-exclusive",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T10:59:59.999999Z",
        1,
        zs("2026-01-01T11:00:00Z"),
        id="cron-hourly-microsecond-before",
    ),
    pytest.param(
        {"cron": "*/10 * * * * *"},
        "2026-01-01T00:00:05Z",
        3,
        zs("2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z"),
        id="cron-6-fields-every-10s",
    ),
    pytest.param(
        # Seconds first: second 30 of minute 0 of hour 12.
        {"cron": "30 0 12 * * *"},
        "2026-01-01T00:00:00Z",
        2,
        zs("2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"),
        id="cron-6-fields-seconds-first",
    ),
    pytest.param(
        {"cron": "@daily"},
        "2026-01-01T00:00:00Z",
        1,
        zs("2026-01-02T00:00:00Z"),
        id="cron-alias-daily",
    ),
    pytest.param(
        # Vixie semantics: day-of-month OR day-of-week. February 2026 starts on a Sunday, so the
        # Fridays are the 6th, 13th (also the 13th) and 20th.
        {"cron": "0 0 13 * 5"},
        "2026-02-01T00:00:00Z",
        3,
        zs("2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z"),
        id="cron-dom-or-dow",
    ),
    pytest.param(
        {"cron": "0 12 29 2 *"},
        "2026-01-01T00:00:00Z",
        2,
        zs("2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"),
        id="cron-leap-day-utc",
    ),
    pytest.param(
        # 12:00 CET (+01) in February.
        {"cron": "0 12 29 2 *", "time_zone": BERLIN},
        "2026-01-01T00:00:00Z",
        2,
        zs("2028-02-29T11:00:00Z", "2032-02-29T11:00:00Z"),
        id="cron-leap-day-berlin",
    ),
    pytest.param(
        {"cron": "0 * * * *", "start_at": z("2026-01-01T10:30:00Z")},
        "2026-01-01T00:00:00Z",
        2,
        zs("2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"),
        id="cron-start-at",
    ),
    pytest.param(
        {"cron": "0 * * * *", "start_at": z("2026-01-01T11:00:00Z")},
        "2026-01-01T00:00:00Z",
        1,
        zs("2026-01-01T11:00:00Z"),
        id="cron-start-at-inclusive",
    ),
    pytest.param(
        {"cron": "0 * * * *", "end_at": z("2026-01-01T12:00:00Z")},
        "2026-01-01T10:00:00Z",
        5,
        zs("2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"),
        id="cron-end-at-inclusive",
    ),
    # --- cron in New York, no DST change ------------------------------------------------------
    pytest.param(
        # Friday 2026-01-02 10:00 EST is past 09:00; next is Monday 09:00 EST = 14:00Z.
        {"cron": "0 9 * * 1-5", "time_zone": NEW_YORK},
        "2026-01-02T15:00:00Z",
        2,
        zs("2026-01-05T14:00:00Z", "2026-01-06T14:00:00Z"),
        id="cron-weekdays-new-york",
    ),
    pytest.param(
        # Friday 2026-03-06 at 09:00 EST = 14:00Z; Monday 2026-03-09 at 09:00 EDT = 13:00Z.
        {"cron": "0 9 * * 1-5", "time_zone": NEW_YORK},
        "2026-03-06T15:00:00Z",
        1,
        zs("2026-03-09T13:00:00Z"),
        id="cron-weekdays-new-york-across-spring-forward",
    ),
    # --- Europe/Berlin spring forward: 02:00 -> 03:00 on 2026-03-29 -----------------------------
    pytest.param(
        # 02:30 does not exist: fires once at the first valid instant after the gap,
        # 03:00 CEST = 01:00Z; the next day 02:30 CEST = 00:30Z.
        {"cron": "30 2 * * *", "time_zone": BERLIN},
        "2026-03-28T12:00:00Z",
        2,
        zs("2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
        id="berlin-spring-gap-fires-after-gap",
    ),
    pytest.param(
        # Same with a seconds field: 02:30:00 -> 03:00:00 CEST.
        {"cron": "0 30 2 * * *", "time_zone": BERLIN},
        "2026-03-28T12:00:00Z",
        2,
        zs("2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
        id="berlin-spring-gap-6-fields",
    ),
    pytest.param(
        # 02:00, 02:15, 02:30, 02:45 are all in the gap: ONE slot at 01:00Z, then the next day's
        # 02:00 and 02:15 CEST (00:00Z, 00:15Z).
        {"cron": "*/15 2 * * *", "time_zone": BERLIN},
        "2026-03-28T12:00:00Z",
        3,
        zs("2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z", "2026-03-30T00:15:00Z"),
        id="berlin-spring-gap-collapses",
    ),
    pytest.param(
        # From 01:30 CET: 02:00 (gap -> 01:00Z) and 03:00 CEST (= 01:00Z) are one slot; 04:00 CEST.
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-03-29T00:30:00Z",
        3,
        zs("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z"),
        id="berlin-spring-hourly",
    ),
    # --- Europe/Berlin fall back: 03:00 -> 02:00 on 2026-10-25 ----------------------------------
    pytest.param(
        # 02:30 happens twice: fires once, at the first occurrence 02:30 CEST = 00:30Z; the next
        # day 02:30 CET = 01:30Z.
        {"cron": "30 2 * * *", "time_zone": BERLIN},
        "2026-10-24T12:00:00Z",
        2,
        zs("2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"),
        id="berlin-fall-repeat-fires-once",
    ),
    pytest.param(
        # Right after the first occurrence: the second one (01:30Z) is not a slot.
        {"cron": "30 2 * * *", "time_zone": BERLIN},
        "2026-10-25T00:30:00Z",
        1,
        zs("2026-10-26T01:30:00Z"),
        id="berlin-fall-after-first-occurrence",
    ),
    pytest.param(
        # 'after' inside the repeated hour (02:15 CET, second occurrence).
        {"cron": "30 2 * * *", "time_zone": BERLIN},
        "2026-10-25T01:15:00Z",
        1,
        zs("2026-10-26T01:30:00Z"),
        id="berlin-fall-after-in-second-occurrence",
    ),
    pytest.param(
        # 02:00 CEST = 00:00Z; the repeated 02:00 CET (01:00Z) does not fire; 03:00 CET = 02:00Z.
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-10-24T23:30:00Z",
        3,
        zs("2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"),
        id="berlin-fall-hourly-skips-repeat",
    ),
    pytest.param(
        # From 02:30 CET (second occurrence) the next wall time not yet fired is 03:00 CET.
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-10-25T01:30:00Z",
        1,
        zs("2026-10-25T02:00:00Z"),
        id="berlin-fall-hourly-from-second-occurrence",
    ),
    pytest.param(
        # 02:00/02:20/02:40 CEST = 00:00Z/00:20Z/00:40Z; after 02:30 CEST: 02:40 CEST, then the
        # next day's 02:00 CET = 01:00Z.
        {"cron": "*/20 2 * * *", "time_zone": BERLIN},
        "2026-10-25T00:30:00Z",
        2,
        zs("2026-10-25T00:40:00Z", "2026-10-26T01:00:00Z"),
        id="berlin-fall-minutes-in-repeat",
    ),
    # --- America/New_York: 2026-03-08 spring forward, 2026-11-01 fall back ---------------------
    pytest.param(
        # 02:30 does not exist: 03:00 EDT = 07:00Z; next day 02:30 EDT = 06:30Z.
        {"cron": "30 2 * * *", "time_zone": NEW_YORK},
        "2026-03-07T12:00:00Z",
        2,
        zs("2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"),
        id="new-york-spring-gap",
    ),
    pytest.param(
        # From 01:30 EST: 02:00 (gap) and 03:00 EDT are one slot at 07:00Z; 04:00 EDT = 08:00Z.
        {"cron": "0 * * * *", "time_zone": NEW_YORK},
        "2026-03-08T06:30:00Z",
        2,
        zs("2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"),
        id="new-york-spring-hourly",
    ),
    pytest.param(
        # 01:30 happens twice: once at 01:30 EDT = 05:30Z; next day 01:30 EST = 06:30Z.
        {"cron": "30 1 * * *", "time_zone": NEW_YORK},
        "2026-10-31T12:00:00Z",
        2,
        zs("2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"),
        id="new-york-fall-repeat-fires-once",
    ),
    pytest.param(
        # 01:00 EDT = 05:00Z; the repeated 01:00 EST (06:00Z) does not fire; 02:00 EST = 07:00Z.
        {"cron": "0 * * * *", "time_zone": NEW_YORK},
        "2026-11-01T04:30:00Z",
        3,
        zs("2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"),
        id="new-york-fall-hourly-skips-repeat",
    ),
]


@pytest.mark.parametrize(("kwargs", "after", "count", "expected"), NEXT_FIRE_CASES)
def test_next_fire_times(
    kwargs: dict[str, Any], after: str, count: int, expected: list[datetime]
) -> None:
    slots = next_fire_times(Schedule(**kwargs), after=z(after), count=count)
    assert slots == expected
    assert all(s.tzinfo is UTC for s in slots)


def test_next_fire_time_single_and_exhausted() -> None:
    hourly = Schedule(cron="0 * * * *", end_at=z("2026-01-01T12:00:00Z"))
    assert next_fire_time(hourly, after=z("2026-01-01T11:30:00Z")) == z("2026-01-01T12:00:00Z")
    assert next_fire_time(hourly, after=z("2026-01-01T12:00:00Z")) is None


def test_after_in_another_time_zone_is_the_same_instant() -> None:
    berlin = datetime.fromisoformat("2026-01-01T01:30:00+01:00")  # 00:30Z
    assert next_fire_times(Schedule(interval=H), after=berlin) == zs("2026-01-01T01:00:00Z")


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_times(Schedule(interval=H), after=datetime(2026, 1, 1))


# (schedule kwargs, at_or_before, expected)
PREVIOUS_CASES = [
    pytest.param(
        {"cron": "0 * * * *"}, "2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z", id="inclusive"
    ),
    pytest.param(
        {"cron": "0 * * * *"}, "2026-01-01T10:59:59Z", "2026-01-01T10:00:00Z", id="hourly"
    ),
    pytest.param({"interval": H}, "2026-01-01T10:59:59Z", "2026-01-01T10:00:00Z", id="interval"),
    pytest.param(
        # 02:30 CET (second occurrence): the repeated 02:00 CET (01:00Z) is no slot; 02:00 CEST is.
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-10-25T01:30:00Z",
        "2026-10-25T00:00:00Z",
        id="berlin-fall-second-occurrence",
    ),
    pytest.param(
        # 02:30 CET (second occurrence): 02:40 CEST (00:40Z) already fired, before it.
        {"cron": "40 2 * * *", "time_zone": BERLIN},
        "2026-10-25T01:30:00Z",
        "2026-10-25T00:40:00Z",
        id="berlin-fall-later-wall-time-already-fired",
    ),
    pytest.param(
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-03-29T01:00:00Z",
        "2026-03-29T01:00:00Z",
        id="berlin-spring-transition-instant",
    ),
    pytest.param(
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-03-29T00:59:59Z",
        "2026-03-29T00:00:00Z",
        id="berlin-spring-before-gap",
    ),
    pytest.param(
        {"interval": H, "start_at": z("2026-01-01T00:30:00Z")},
        "2026-01-01T00:00:00Z",
        None,
        id="interval-before-start-at",
    ),
    pytest.param(
        {"cron": "0 * * * *", "start_at": z("2026-01-01T00:30:00Z")},
        "2026-01-01T00:45:00Z",
        None,
        id="cron-before-start-at",
    ),
    pytest.param(
        {"interval": H, "end_at": z("2026-01-01T02:30:00Z")},
        "2026-06-01T00:00:00Z",
        "2026-01-01T02:00:00Z",
        id="interval-after-end-at",
    ),
    pytest.param(
        {"cron": "0 12 29 2 *"},
        "2026-01-01T00:00:00Z",
        "2024-02-29T12:00:00Z",
        id="leap-day-back",
    ),
]


@pytest.mark.parametrize(("kwargs", "at_or_before", "expected"), PREVIOUS_CASES)
def test_previous_fire_time(
    kwargs: dict[str, Any], at_or_before: str, expected: str | None
) -> None:
    got = previous_fire_time(Schedule(**kwargs), at_or_before=z(at_or_before))
    assert got == (None if expected is None else z(expected))


# (schedule kwargs, after, until, limit, expected count)
COUNT_CASES = [
    pytest.param(
        {"interval": timedelta(seconds=1)},
        "2026-01-01T00:00:00Z",
        "2026-01-31T00:00:00Z",
        None,
        30 * 86_400,
        id="interval-1s-30-days-exact",
    ),
    pytest.param(
        {"interval": timedelta(seconds=1)},
        "2026-01-01T00:00:00Z",
        "2026-01-31T00:00:00Z",
        500,
        500,
        id="interval-limit",
    ),
    pytest.param(
        {"interval": H, "start_at": z("2026-01-02T00:00:00Z"), "end_at": z("2026-01-02T05:00:00Z")},
        "2025-01-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        None,
        6,
        id="interval-bounded",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T00:00:00Z",
        "2026-01-04T00:00:00Z",
        None,
        72,
        id="cron-hourly-3-days",
    ),
    pytest.param(
        {"cron": "* * * * * *"},
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        1000,
        1000,
        id="cron-saturates",
    ),
    # Local 2026-10-25 00:00 CEST (excl.) to 2026-10-26 00:00 CET (incl.): 25 real hours, but 24
    # wall times (01:00 .. 23:00 and 00:00), each firing once.
    pytest.param(
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-10-24T22:00:00Z",
        "2026-10-25T23:00:00Z",
        None,
        24,
        id="berlin-fall-day-24-slots",
    ),
    # Local 2026-03-29 00:00 CET (excl.) to 2026-03-30 00:00 CEST (incl.): 24 wall times, of which
    # 02:00 (gap) and 03:00 are one slot: 23.
    pytest.param(
        {"cron": "0 * * * *", "time_zone": BERLIN},
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        None,
        23,
        id="berlin-spring-day-23-slots",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-02T00:00:00Z",
        "2026-01-01T00:00:00Z",
        None,
        0,
        id="empty-range",
    ),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("kwargs", "after", "until", "limit", "expected"), COUNT_CASES)
def test_count_fire_times(
    kwargs: dict[str, Any], after: str, until: str, limit: int | None, expected: int
) -> None:
    schedule = Schedule(**kwargs)
    assert count_fire_times(schedule, after=z(after), until=z(until), limit=limit) == expected


# (schedule kwargs, from, to, cap, expected)
BACKFILL_CASES = [
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T00:00:00Z",
        "2026-01-01T03:00:00Z",
        100,
        zs(
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z",
            "2026-01-01T03:00:00Z",
        ),
        id="both-ends-inclusive",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T00:00:00Z",
        "2026-01-01T03:00:00Z",
        2,
        zs("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
        id="cap-keeps-earliest",
    ),
    pytest.param(
        {"interval": H, "start_at": z("2026-01-01T00:30:00Z")},
        "2026-01-01T00:00:00Z",
        "2026-01-01T03:00:00Z",
        100,
        zs("2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z", "2026-01-01T02:30:00Z"),
        id="interval-respects-start-at",
    ),
    pytest.param(
        {"cron": "30 2 * * *", "time_zone": BERLIN},
        "2026-03-28T00:00:00Z",
        "2026-03-31T00:00:00Z",
        100,
        zs("2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"),
        id="berlin-spring-daily",
    ),
    pytest.param(
        {"cron": "0 * * * *"},
        "2026-01-01T03:00:00Z",
        "2026-01-01T00:00:00Z",
        100,
        [],
        id="reversed-range",
    ),
]


@pytest.mark.parametrize(("kwargs", "from_", "to", "cap", "expected"), BACKFILL_CASES)
def test_backfill_slots(
    kwargs: dict[str, Any], from_: str, to: str, cap: int, expected: list[datetime]
) -> None:
    assert backfill_slots(Schedule(**kwargs), from_=z(from_), to=z(to), cap=cap) == expected


def test_latest_fire_times_walks_back_cheaply() -> None:
    # One year of one-second slots: only the last three are touched.
    every_second = Schedule(cron="* * * * * *")
    latest = latest_fire_times(
        every_second, after=z("2025-01-01T00:00:00Z"), until=z("2026-01-01T00:00:00Z"), limit=3
    )
    assert latest == zs("2025-12-31T23:59:58Z", "2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z")


def test_interval_anchor_choice() -> None:
    assert interval_anchor(Schedule(interval=H)) == EPOCH == z("1970-01-01T00:00:00Z")
    created = z("2026-02-03T04:05:06Z")
    assert interval_anchor(Schedule(interval=H, anchor=created)) == created
    start = datetime.fromisoformat("2026-01-01T01:00:00+01:00")
    assert interval_anchor(Schedule(interval=H, start_at=start, anchor=created)) == z(
        "2026-01-01T00:00:00Z"
    )


# --- properties -------------------------------------------------------------------------------

_ZONES = [
    "UTC",
    BERLIN,
    NEW_YORK,
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kolkata",  # +05:30, no DST
    "America/Santiago",  # transitions at local midnight
]
_CRONS = [
    "0 * * * *",
    "30 2 * * *",
    "*/15 1-3 * * *",
    "0 0 * * *",
    "15 0 * * 0",
    "0 12 29 2 *",
    "*/20 * * * * *",
    "0 30 1 * * *",
]

_afters = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@st.composite
def _schedules(draw: st.DrawFn, min_interval: int = 1) -> Schedule:
    if draw(st.booleans()):
        seconds = draw(st.integers(min_value=min_interval, max_value=40 * 86_400))
        anchor = draw(st.none() | _afters)
        return Schedule(interval=timedelta(seconds=seconds), anchor=anchor)
    return Schedule(cron=draw(st.sampled_from(_CRONS)), time_zone=draw(st.sampled_from(_ZONES)))


@settings(max_examples=300, deadline=None)
@given(schedule=_schedules(), after=_afters)
def test_next_fire_times_are_after_and_strictly_increasing(
    schedule: Schedule, after: datetime
) -> None:
    slots = next_fire_times(schedule, after=after, count=5)
    assert len(slots) == 5
    assert slots[0] > after
    assert all(a < b for a, b in pairwise(slots))
    # Restarting from any returned slot continues the same sequence (stable across restarts).
    assert next_fire_times(schedule, after=slots[1], count=3) == slots[2:]


@settings(max_examples=300, deadline=None)
@given(schedule=_schedules(), after=_afters)
def test_forward_and_backward_agree(schedule: Schedule, after: datetime) -> None:
    first = next_fire_time(schedule, after=after)
    assert first is not None
    previous = previous_fire_time(schedule, at_or_before=after)
    assert previous is not None
    assert previous <= after < first
    # No slot lies between the previous one and the next one.
    assert next_fire_time(schedule, after=previous) == first
    assert previous_fire_time(schedule, at_or_before=first - timedelta(microseconds=1)) == previous
    assert previous_fire_time(schedule, at_or_before=first) == first


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.integers(min_value=1, max_value=10 * 86_400),
    anchor=_afters,
    after=_afters,
)
def test_interval_slots_are_aligned_to_the_anchor(
    seconds: int, anchor: datetime, after: datetime
) -> None:
    interval = timedelta(seconds=seconds)
    schedule = Schedule(interval=interval, anchor=anchor)
    for slot in next_fire_times(schedule, after=after, count=3):
        assert (slot - anchor) % interval == timedelta(0)
    # Within one interval of 'after', as no slot is skipped.
    assert next_fire_times(schedule, after=after)[0] - after <= interval


@settings(max_examples=100, deadline=None)
@given(schedule=_schedules(min_interval=60), after=_afters, days=st.integers(0, 2))
def test_range_functions_agree(schedule: Schedule, after: datetime, days: int) -> None:
    until = after + timedelta(days=days, hours=5)
    every = fire_times_between(schedule, after=after, until=until, limit=100_000)
    assert count_fire_times(schedule, after=after, until=until) == len(every)
    assert latest_fire_times(schedule, after=after, until=until, limit=4) == every[-4:]
    assert fire_times_between(schedule, after=after, until=until, limit=4) == every[:4]
