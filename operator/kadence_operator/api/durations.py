"""Go-style duration strings (``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``) <-> ``timedelta``.

Kubernetes users know durations from Go (``time.ParseDuration``), and CEL's ``duration()`` in the
CRD validation rules parses the same syntax, so every duration field of the Kadence API is such a
string. This module is the Python side of that contract:

- :data:`DURATION_PATTERN` is the regular expression the CRD schema puts on every duration field.
  It is a strict subset of what Go accepts: no sign, no bare ``"0"``, at least one unit.
- :func:`parse_duration` turns a string that matches it into a :class:`datetime.timedelta`, with
  Go's limits (at most ``2**63 - 1`` nanoseconds, about 292 years) and Go's truncation of
  fractions below a nanosecond. ``timedelta`` keeps microseconds, so ``"1500ns"`` becomes 1µs.
- :func:`format_duration` renders a ``timedelta`` back in the same syntax (``"1h30m"``).

Pure: no I/O and no third-party imports.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

__all__ = [
    "DURATION_PATTERN",
    "MAX_DURATION_NS",
    "format_duration",
    "is_duration",
    "parse_duration",
    "parse_duration_ns",
]

#: The schema pattern for every duration field (also used verbatim in the CRDs).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"

#: Go's ``time.Duration`` is an int64 count of nanoseconds.
MAX_DURATION_NS = 2**63 - 1

_WHOLE = re.compile(DURATION_PATTERN.removeprefix("^").removesuffix("$"))
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_EXAMPLES = '"30s", "5m", "1h30m" or "250ms"'


def parse_duration_ns(text: str) -> int:
    """Parse a Go-style duration string into an integer count of nanoseconds.

    Raises :class:`ValueError` naming the bad value when ``text`` is not a duration (wrong
    syntax, or longer than Go's maximum of about 292 years).
    """
    if not isinstance(text, str) or _WHOLE.fullmatch(text) is None:
        raise ValueError(
            f"invalid duration {text!r}: expected a Go-style duration such as {_EXAMPLES} "
            "(units ns, us, ms, s, m, h; no spaces, no sign)"
        )
    total = Fraction(0)
    for number, unit in _PART.findall(text):
        total += Fraction(number) * _UNIT_NS[unit]
    nanos = int(total)  # Go truncates sub-nanosecond fractions.
    if nanos > MAX_DURATION_NS:
        raise ValueError(f"invalid duration {text!r}: longer than the maximum of 2562047h47m16s")
    return nanos


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration string (``"1h30m"``) into a :class:`~datetime.timedelta`.

    Precision is one microsecond (sub-microsecond parts are truncated).
    Raises :class:`ValueError` naming the bad value.
    """
    return timedelta(microseconds=parse_duration_ns(text) // 1_000)


def is_duration(text: str) -> bool:
    """True when ``text`` is a valid duration string for the Kadence API."""
    try:
        parse_duration_ns(text)
    except ValueError:
        return False
    return True


def format_duration(value: timedelta) -> str:
    """Render a non-negative ``timedelta`` as a compact Go-style duration (``"1h30m"``).

    The result always parses back with :func:`parse_duration` to the same value. Zero is ``"0s"``.
    """
    if value < timedelta(0):
        raise ValueError(f"cannot format negative duration {value!r}")
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micros == 0:
        if seconds:
            parts.append(f"{seconds}s")
    elif seconds or parts:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif micros % 1_000 == 0:
        parts.append(f"{micros // 1_000}ms")
    else:
        parts.append(f"{micros}us")
    return "".join(parts)
