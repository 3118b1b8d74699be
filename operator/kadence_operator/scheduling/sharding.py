"""Which operator shard owns a Job: jump consistent hash of a stable 64-bit hash of the Job uid.

The key is the first 8 bytes (big-endian) of ``sha256("kadence/shard/v1" NUL job_uid)``, stable
across processes (unlike Python's ``hash()``). Jump consistent hash (Lamping and Veach, 2014,
https://arxiv.org/abs/1406.2294) maps it to a shard in ``[0, shards)`` with no table, a uniform
spread, and minimal movement: growing from ``n`` to ``n + 1`` shards moves about ``1 / (n + 1)``
of the Jobs, all of them to the new shard, and none between old shards.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from kadence import partitioning
from kadence_operator.scheduling._hashing import hash64

__all__ = ["jump_consistent_hash", "shard_for"]

#: The one implementation, shared with Queue partitioning (:mod:`kadence.partitioning`).
jump_consistent_hash = partitioning.jump_hash


def shard_for(job_uid: str, shards: int) -> int:
    """The shard in ``[0, shards)`` that owns the Job with uid ``job_uid``."""
    return jump_consistent_hash(hash64("kadence/shard/v1", job_uid), shards)
