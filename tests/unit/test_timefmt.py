"""Kubernetes ``Time`` strings: RFC 3339, UTC, second precision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from kadence_operator.timefmt import rfc3339


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC), "2026-11-25T12:00:05Z"),
        (datetime(2026, 11, 25, 12, 0, 5, 999_999, tzinfo=UTC), "2026-11-25T12:00:05Z"),
        (datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin")), "2026-03-29T01:30:00Z"),
        (datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5))), "2025-12-31T19:30:00Z"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),
    ],
)
def test_rfc3339(moment: datetime, expected: str) -> None:
    assert rfc3339(moment) == expected


def test_rfc3339_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = datetime.strptime(rfc3339(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
