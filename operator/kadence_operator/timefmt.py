"""Kubernetes ``Time`` strings, in one place (pure).

Status fields, conditions and Events all use RFC 3339 UTC at second precision
(``2026-01-31T09:00:00Z``); strings of this one format also sort like the instants they name.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as RFC 3339 UTC with second precision."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds")[:19] + "Z"  # 2x faster than strftime
