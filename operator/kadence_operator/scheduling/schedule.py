"""The input vocabulary of the scheduling core: a validated, immutable :class:`Schedule`.

These are deliberately small frozen dataclasses, independent of the CRD models: the operator
adapts a Job's spec into a :class:`Schedule` (and a ``ScheduleError`` into a status condition).
A :class:`Schedule` validates itself on construction, so every function of the scheduling
package can assume a well-formed one.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

__all__ = ["CRON_ALIASES", "Schedule", "ScheduleError", "Spread", "cron_problem"]

#: The ``@`` shorthands accepted in :attr:`Schedule.cron` (all are five-field expressions).
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

# A token that starts with H (Jenkins-style hash) or R (croniter's random) -- month and weekday
# names never start with either letter. H needs a hash id we do not pass and R is random, so two
# replicas would disagree: both are rejected, use ``spread: hash`` instead.
_HASH_OR_RANDOM = re.compile(r"(^|,)[HR]($|[(/,~])", re.IGNORECASE)

# Validation looks for one fire time after this instant (croniter gives up after ~50 years).
_VALIDATION_START = datetime(2000, 1, 1)


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message is meant for a status condition."""


class Spread(StrEnum):
    """Whether a Job's dispatches are delayed by a stable per-Job offset (see ``dispatch``)."""

    #: Dispatch at the slot (plus jitter, if any).
    NONE = "none"
    #: Dispatch at the slot plus an offset derived from a hash of the Job's key, the same for
    #: every slot of the Job, so that many Jobs with the same schedule do not fire at once.
    HASH = "hash"


@dataclass(frozen=True)
class Schedule:
    """When a Job fires. Exactly one of :attr:`interval` and :attr:`cron` is set.

    Invalid combinations raise :class:`ScheduleError` on construction.
    """

    #: Fixed period; slots are ``anchor + k * interval`` (see ``timing``). Must be positive.
    interval: timedelta | None = None
    #: Cron expression: five fields (minute first), six fields (seconds first), or one of
    #: :data:`CRON_ALIASES`. Evaluated as wall-clock time in :attr:`time_zone`.
    cron: str | None = None
    #: IANA time zone for :attr:`cron`. Intervals are absolute durations and ignore it.
    time_zone: str = "UTC"
    #: No slot is earlier than this (inclusive bound); also the anchor of interval slots.
    start_at: datetime | None = None
    #: No slot is later than this (inclusive bound).
    end_at: datetime | None = None
    #: Upper bound (exclusive) of the deterministic per-slot dispatch delay; zero disables it.
    jitter: timedelta = timedelta(0)
    #: Whether dispatches are delayed by a stable per-Job offset.
    spread: Spread = Spread.NONE
    #: Anchor of interval slots when ``start_at`` is unset: pass the Job's creation time. None
    #: anchors at the Unix epoch. Only a phase, not a bound; ignored by cron schedules.
    anchor: datetime | None = None

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.cron is None):
            raise ScheduleError("exactly one of interval and cron must be set")
        if self.interval is not None and self.interval <= timedelta(0):
            raise ScheduleError(f"interval must be positive, got {self.interval}")
        if self.jitter < timedelta(0):
            raise ScheduleError(f"jitter must not be negative, got {self.jitter}")
        try:
            # Accept the CRD's plain strings ("none", "hash") too.
            object.__setattr__(self, "spread", Spread(self.spread))
        except ValueError as error:
            raise ScheduleError(f"spread must be 'none' or 'hash', got {self.spread!r}") from error
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ScheduleError(f"unknown time zone {self.time_zone!r}") from error
        for name, value in (
            ("start_at", self.start_at),
            ("end_at", self.end_at),
            ("anchor", self.anchor),
        ):
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ScheduleError(f"{name} must be timezone-aware, got {value!r}")
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise ScheduleError(f"end_at {self.end_at} is before start_at {self.start_at}")
        if self.cron is not None and (problem := cron_problem(self.cron)) is not None:
            raise ScheduleError(problem)

    @property
    def zone(self) -> ZoneInfo:
        """The :attr:`time_zone` as a ``ZoneInfo`` (instances are cached by ``zoneinfo``)."""
        return ZoneInfo(self.time_zone)

    @property
    def cron_has_seconds(self) -> bool:
        """True for a six-field cron expression, whose first field is the second."""
        return self.cron is not None and len(self.cron.split()) == 6


def cron_iterator(expression: str, start: datetime) -> croniter:
    """A croniter over naive wall-clock datetimes, starting at naive ``start``.

    Six-field expressions are read with the seconds field first.
    """
    six = len(expression.split()) == 6
    return croniter(expression, start, ret_type=datetime, second_at_beginning=six)


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None: the one cron check of Kadence.

    The API validation (``spec.schedule.cron: <problem>``) and :class:`Schedule` both call it,
    so a spec the validation accepts is one the scheduler can run. Accepted: 5 fields, 6 fields
    (seconds first) or a shorthand from :data:`CRON_ALIASES`; refused: H/R tokens, values out of
    range, expressions that never fire.
    """
    fields = expression.split()
    if not fields:
        return "cron expression is empty"
    if len(fields) == 1 and fields[0].startswith("@"):
        if fields[0] not in CRON_ALIASES:
            return f"unknown cron shorthand {expression!r}; use one of " + ", ".join(CRON_ALIASES)
    elif len(fields) not in (5, 6):
        return (
            f"cron expression {expression!r} must have 5 fields, or 6 with seconds first; "
            f"it has {len(fields)}"
        )
    if any(_HASH_OR_RANDOM.search(field) for field in fields):
        return (
            f"cron expression {expression!r} uses H or R, which are not deterministic; "
            "use spread: hash instead"
        )
    normalized = " ".join(fields)
    seconds = len(fields) == 6
    if not croniter.is_valid(normalized, second_at_beginning=seconds):
        layout = (
            "second minute hour day-of-month month day-of-week"
            if seconds
            else "minute hour day-of-month month day-of-week"
        )
        return f"invalid cron expression {expression!r} (fields: {layout})"
    try:
        cron_iterator(normalized, _VALIDATION_START).get_next(datetime)
    except (CroniterBadDateError, ValueError, KeyError, IndexError, TypeError, OverflowError):
        return f"cron expression {expression!r} never fires"
    return None
