"""Stable hashing helpers shared by the scheduling modules.

Every value derived here must be identical in every process, on every replica and across
releases (run ids are dedupe keys, shard numbers decide ownership), so everything is built on
SHA-256 over an explicit, versioned byte encoding -- never on Python's salted ``hash()``.

Encoding: the UTF-8 bytes of ``domain``, then each part, joined by a NUL byte. A ``domain`` such
as ``"kadence/spread/v1"`` separates the uses so that, for example, a Job's spread offset and its
shard are independent.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

__all__ = ["digest", "hash64", "instant_key", "require_aware"]


def digest(domain: str, *parts: str) -> bytes:
    """SHA-256 of ``domain`` and ``parts`` joined by NUL bytes."""
    return hashlib.sha256("\x00".join((domain, *parts)).encode("utf-8")).digest()


def hash64(domain: str, *parts: str) -> int:
    """The first 8 bytes of :func:`digest` as a big-endian unsigned integer in ``[0, 2**64)``."""
    return int.from_bytes(digest(domain, *parts)[:8], "big")


def require_aware(name: str, value: datetime) -> datetime:
    """``value`` converted to UTC; a naive datetime is a programming error (``ValueError``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


def instant_key(value: datetime) -> str:
    """The canonical text of an instant: UTC, microseconds, ``Z`` suffix.

    The same instant written in any time zone gives the same key, e.g.
    ``2026-01-01T00:00:00.000000Z``.
    """
    utc = require_aware("instant", value)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
