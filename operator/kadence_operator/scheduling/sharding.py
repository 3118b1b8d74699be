"""Which operator shard owns a Job: jump consistent hash of a stable 64-bit hash of the Job uid.

The key is the first 8 bytes (big-endian) of ``sha256("kadence/shard/v1" NUL job_uid)``, stable
across processes (unlike Python's ``hash()``). Jump consistent hash (Lamping and Veach, 2014,
https://arxiv.org/abs/1406.2294) maps it to a shard in ``[0, shards)`` with no table, a uniform
spread, and minimal movement: growing from ``n`` to ``n + 1`` shards moves about ``1 / (n + 1)``
of the Jobs, all of them to the new shard, and none between old shards.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from kadence_operator.scheduling._hashing import hash64

__all__ = ["jump_consistent_hash", "shard_for"]

_MASK64 = (1 << 64) - 1
_MULTIPLIER = 2862933555777941757


def jump_consistent_hash(key: int, buckets: int) -> int:
    """The bucket in ``[0, buckets)`` of the unsigned 64-bit ``key`` (the paper's algorithm)."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    if not 0 <= key <= _MASK64:
        raise ValueError(f"key must be an unsigned 64-bit integer, got {key}")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_for(job_uid: str, shards: int) -> int:
    """The shard in ``[0, shards)`` that owns the Job with uid ``job_uid``."""
    return jump_consistent_hash(hash64("kadence/shard/v1", job_uid), shards)
