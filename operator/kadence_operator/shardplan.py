"""Which scheduler shards this replica should hold: a pure plan over the shard Leases' state.

This is a purely computational module with no side-effects. Each replica renews a *member* Lease
so the others can count it, and the shards (one Lease each) are split evenly: a replica holds at
most ``ceil(shards / live members)``, takes free or expired shards up to that, and releases any
surplus so a newcomer can take it. The I/O lives in :mod:`kadence_operator.shards`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SHARD_LEASE_PREFIX = "kadence-shard-"
MEMBER_LEASE_PREFIX = "kadence-member-"


def shard_lease_name(shard: int) -> str:
    return f"{SHARD_LEASE_PREFIX}{shard:03d}"


def shard_of_lease(name: str) -> int | None:
    if not name.startswith(SHARD_LEASE_PREFIX):
        return None
    suffix = name[len(SHARD_LEASE_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


@dataclass(frozen=True)
class LeaseView:
    """What the plan needs to know of one Lease."""

    name: str
    holder: str | None
    renew_time: datetime | None
    duration_seconds: float

    def live_at(self, now: datetime) -> bool:
        """A holder counts until ``renewTime + leaseDurationSeconds``."""
        if not self.holder or self.renew_time is None:
            return False
        return now < self.renew_time + timedelta(seconds=self.duration_seconds)


@dataclass(frozen=True)
class ShardPlan:
    acquire: list[int] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    renew: list[int] = field(default_factory=list)
    target: int = 0


def _preference(me: str, shard: int) -> bytes:
    # Each replica prefers a different order, so replicas starting together rarely race for the
    # same free shard.
    return hashlib.blake2b(f"{me}/{shard}".encode(), digest_size=8).digest()


def live_members(*, me: str, members: list[LeaseView], now: datetime) -> list[str]:
    names = {m.holder for m in members if m.live_at(now) and m.holder}
    names.add(me)
    return sorted(names)


def plan_shards(
    *, me: str, shards: int, leases: dict[int, LeaseView], members: list[str], now: datetime
) -> ShardPlan:
    """Decide which shards to renew, acquire and release.

    ``leases`` maps shard number to its Lease (absent = never created); ``members`` are the live
    replicas including ``me``.
    """
    target = math.ceil(shards / max(1, len(members)))
    mine = sorted(s for s, lease in leases.items() if lease.holder == me)
    renew = list(mine)
    release: list[int] = []
    if len(mine) > target and len(members) > 1:
        # Give back the surplus (highest-preference-last) so a newer replica can pick it up.
        surplus = sorted(mine, key=lambda s: _preference(me, s), reverse=True)[: len(mine) - target]
        release = sorted(surplus)
        renew = [s for s in mine if s not in surplus]
    free = [
        s
        for s in range(shards)
        if s not in leases or (leases[s].holder != me and not leases[s].live_at(now))
    ]
    room = max(0, target - len(renew))
    acquire = sorted(sorted(free, key=lambda s: _preference(me, s))[:room])
    return ShardPlan(acquire=acquire, release=release, renew=renew, target=target)
