"""Validation of ``kadence_operator.scheduling.Schedule``: a Schedule that exists is usable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence_operator.scheduling import Schedule, ScheduleError, Spread

START = datetime(2026, 1, 1, tzinfo=UTC)

# (kwargs, part of the error message)
INVALID_CASES = [
    pytest.param({}, "exactly one of interval and cron", id="neither"),
    pytest.param({"interval": timedelta(hours=1), "cron": "* * * * *"}, "exactly one", id="both"),
    pytest.param({"interval": timedelta(0)}, "positive", id="zero-interval"),
    pytest.param({"interval": timedelta(seconds=-5)}, "positive", id="negative-interval"),
    pytest.param({"cron": ""}, "empty", id="empty-cron"),
    pytest.param({"cron": "* * * *"}, "it has 4", id="4-fields"),
    pytest.param({"cron": "0 0 1 1 * 2026 *"}, "it has 7", id="7-fields"),
    pytest.param({"cron": "61 * * * *"}, "invalid cron", id="minute-out-of-range"),
    pytest.param({"cron": "0 0 * * 8"}, "invalid cron", id="weekday-out-of-range"),
    pytest.param({"cron": "a b c d e"}, "invalid cron", id="garbage"),
    pytest.param({"cron": "0 0 30 2 *"}, "never fires", id="february-30th"),
    pytest.param({"cron": "H * * * *"}, "H or R", id="jenkins-hash"),
    pytest.param({"cron": "0 H(0-5) * * *"}, "H or R", id="jenkins-hash-range"),
    pytest.param({"cron": "R * * * *"}, "H or R", id="random"),
    pytest.param({"cron": "@reboot"}, "unknown cron shorthand", id="reboot"),
    pytest.param({"cron": "@daily 5"}, "must have 5 fields", id="alias-with-fields"),
    pytest.param(
        {"interval": timedelta(hours=1), "time_zone": "Mars/Olympus_Mons"},
        "unknown time zone",
        id="unknown-zone",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "time_zone": "../etc/passwd"},
        "unknown time zone",
        id="path-zone",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "start_at": datetime(2026, 1, 1)},
        "start_at must be timezone-aware",
        id="naive-start",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "end_at": datetime(2026, 1, 1)},
        "end_at must be timezone-aware",
        id="naive-end",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "anchor": datetime(2026, 1, 1)},
        "anchor must be timezone-aware",
        id="naive-anchor",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "start_at": START, "end_at": START - timedelta(seconds=1)},
        "before start_at",
        id="end-before-start",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "jitter": timedelta(seconds=-1)},
        "jitter",
        id="negative-jitter",
    ),
    pytest.param(
        {"interval": timedelta(hours=1), "spread": "random"}, "spread", id="unknown-spread"
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID_CASES)
def test_invalid_schedules_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(**kwargs)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cron": "0 3 * * 1-5", "time_zone": "Europe/Berlin"}, id="weekdays"),
        pytest.param({"cron": "*/10 * * * * *"}, id="6-fields"),
        pytest.param({"cron": "0 0 1 JAN,JUL MON-FRI"}, id="names"),
        pytest.param({"cron": "0 0 L * *"}, id="last-day"),
        pytest.param({"cron": "0 12 29 2 *"}, id="leap-day"),
        pytest.param({"cron": "@hourly"}, id="alias"),
        pytest.param({"cron": "0 0 * * 5#3"}, id="third-friday"),
        pytest.param({"interval": timedelta(microseconds=1)}, id="tiny-interval"),
        pytest.param(
            {"interval": timedelta(hours=1), "start_at": START, "end_at": START},
            id="start-equals-end",
        ),
    ],
)
def test_valid_schedules(kwargs: dict[str, Any]) -> None:
    Schedule(**kwargs)


def test_spread_accepts_the_crd_strings() -> None:
    schedule = Schedule(interval=timedelta(hours=1), spread="hash")  # type: ignore[arg-type]
    assert schedule.spread is Spread.HASH


def test_cron_has_seconds() -> None:
    assert Schedule(cron="*/10 * * * * *").cron_has_seconds
    assert not Schedule(cron="0 * * * *").cron_has_seconds
    assert not Schedule(interval=timedelta(seconds=10)).cron_has_seconds
