"""Key → partition by consistent hashing; shared by publishers and the scheduler.

This is a purely computational module with no side-effects. It uses Lamping & Veach's jump
consistent hash over a 64-bit BLAKE2b digest of the key, so the mapping is the same in every
process and Python version (unlike the built-in ``hash``), spreads keys evenly, and moves only
about ``1/(N+1)`` of the keys when a Queue grows from ``N`` to ``N+1`` partitions.
"""

from __future__ import annotations

import hashlib

_MASK64 = (1 << 64) - 1


def key_hash(key: str) -> int:
    """A stable, unsigned 64-bit hash of ``key``."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in ``[0, buckets)`` of a 64-bit ``key``."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if not 0 <= key <= _MASK64:
        raise ValueError(f"key must be an unsigned 64-bit integer, got {key}")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` in a Queue with ``partitions`` partitions."""
    return jump_hash(key_hash(key), partitions)
