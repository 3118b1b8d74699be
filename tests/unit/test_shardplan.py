"""Table tests for the shard plan: who renews, takes and gives back which shard Lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence_operator.shardplan import (
    LeaseView,
    live_members,
    plan_shards,
    shard_lease_name,
    shard_of_lease,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DURATION = 15.0


def held(holder: str | None, *, age: float = 1.0, name: str = "x") -> LeaseView:
    """A Lease held by ``holder``, last renewed ``age`` seconds ago (15 s duration)."""
    return LeaseView(
        name=name,
        holder=holder,
        renew_time=NOW - timedelta(seconds=age),
        duration_seconds=DURATION,
    )


def leases(**by_holder: list[int]) -> dict[int, LeaseView]:
    return {s: held(h) for h, shards in by_holder.items() for s in shards}


@pytest.mark.parametrize(
    ("case", "shards", "current", "members", "acquire", "release", "renew", "target"),
    [
        ("alone, nothing exists yet", 4, {}, ["a"], [0, 1, 2, 3], [], [], 4),
        ("alone, holds all", 4, leases(a=[0, 1, 2, 3]), ["a"], [], [], [0, 1, 2, 3], 4),
        (
            "a second member joins: a gives back half",
            8,
            leases(a=list(range(8))),
            ["a", "b"],
            [],
            "4 of them",
            "the other 4",
            4,
        ),
        (
            "the newcomer waits for released shards",
            4,
            leases(b=[0, 1, 2, 3]),
            ["a", "b"],
            [],
            [],
            [],
            2,
        ),
        (
            "the newcomer takes released (holderless) shards",
            4,
            {**leases(b=[0, 1]), 2: held(None), 3: held(None)},
            ["a", "b"],
            [2, 3],
            [],
            [],
            2,
        ),
        (
            "expired shards of a dead member are taken up to the target",
            4,
            {0: held("a"), 1: held("a"), 2: held("dead", age=20), 3: held("dead", age=20)},
            ["a"],
            [2, 3],
            [],
            [0, 1],
            4,
        ),
        (
            "a live holder's shard is never taken",
            2,
            {0: held("b", age=14.9), 1: held(None)},
            ["a"],
            [1],
            [],
            [],
            2,
        ),
        ("uneven split rounds up", 5, leases(a=[0, 1, 2]), ["a", "b"], [], [], [0, 1, 2], 3),
        ("three members", 9, {}, ["a", "b", "c"], "3 of them", [], [], 3),
    ],
)
def test_plan_shards(
    case: str,
    shards: int,
    current: dict[int, LeaseView],
    members: list[str],
    acquire: list[int] | str,
    release: list[int] | str,
    renew: list[int] | str,
    target: int,
) -> None:
    plan = plan_shards(me="a", shards=shards, leases=current, members=members, now=NOW)
    assert plan.target == target, case
    if isinstance(release, str):  # "4 of them" / "the other 4": check the split, not the pick
        assert len(plan.release) == 4, case
        assert len(plan.renew) == 4, case
        assert sorted(plan.release + plan.renew) == sorted(s for s, v in current.items()), case
    else:
        assert plan.release == release, case
        assert plan.renew == renew, case
    if isinstance(acquire, str):
        assert len(plan.acquire) == 3, case
        assert len(set(plan.acquire)) == 3, case
    else:
        assert plan.acquire == acquire, case


def test_two_members_starting_together_prefer_different_shards() -> None:
    a = plan_shards(me="a", shards=32, leases={}, members=["a", "b"], now=NOW)
    b = plan_shards(me="b", shards=32, leases={}, members=["a", "b"], now=NOW)
    assert len(a.acquire) == len(b.acquire) == 16
    # Not necessarily disjoint (that is what the Lease write decides), but not the same order.
    assert a.acquire != b.acquire


def test_balancing_converges() -> None:
    """Simulate rounds of two replicas writing Leases: each ends with half of the shards."""
    shards = 16
    state: dict[int, LeaseView] = {}
    for _ in range(6):
        for me in ("a", "b"):
            plan = plan_shards(me=me, shards=shards, leases=state, members=["a", "b"], now=NOW)
            for s in plan.release:
                state[s] = held(None)
            for s in plan.renew + plan.acquire:
                if s not in state or not state[s].live_at(NOW) or state[s].holder == me:
                    state[s] = held(me)
    holders = [v.holder for v in state.values()]
    assert holders.count("a") == holders.count("b") == 8


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([], ["me"]),
        ([held("b"), held("c", age=30)], ["b", "me"]),  # c expired
        ([held("me"), held(None)], ["me"]),
        ([held("z"), held("b")], ["b", "me", "z"]),
    ],
)
def test_live_members(members: list[LeaseView], expected: list[str]) -> None:
    assert live_members(me="me", members=members, now=NOW) == expected


@pytest.mark.parametrize(
    ("lease", "live"),
    [
        (held("a", age=0), True),
        (held("a", age=14.999), True),
        (held("a", age=15), False),
        (held(None, age=0), False),
        (LeaseView(name="x", holder="a", renew_time=None, duration_seconds=15), False),
    ],
)
def test_live_at(lease: LeaseView, live: bool) -> None:
    assert lease.live_at(NOW) is live


@pytest.mark.parametrize(
    ("name", "shard"),
    [
        ("kadence-shard-000", 0),
        ("kadence-shard-031", 31),
        ("kadence-shard-1023", 1023),
        ("kadence-member-op-1", None),
        ("kadence-shard-x1", None),
        ("other", None),
    ],
)
def test_lease_names(name: str, shard: int | None) -> None:
    assert shard_of_lease(name) == shard
    if shard is not None and shard < 1000:
        assert shard_lease_name(shard) == name


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        (
            {
                "metadata": {"name": "kadence-shard-007"},
                "spec": {
                    "holderIdentity": "op-a",
                    "renewTime": "2026-11-25T13:50:24.123456Z",
                    "leaseDurationSeconds": 15,
                },
            },
            ("kadence-shard-007", "op-a", datetime(2026, 11, 25, 13, 50, 24, 123456, UTC), 15.0),
        ),
        (  # released: no holder; renewTime with fewer fraction digits
            {
                "metadata": {"name": "kadence-shard-000"},
                "spec": {"holderIdentity": "", "renewTime": "2026-11-25T13:50:24.1Z"},
            },
            ("kadence-shard-000", None, datetime(2026, 11, 25, 13, 50, 24, 100000, UTC), 0.0),
        ),
        (  # created by hand, no spec at all
            {"metadata": {"name": "kadence-member-x"}},
            ("kadence-member-x", None, None, 0.0),
        ),
    ],
)
def test_lease_views_from_the_api_servers_json(
    lease: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    from kadence_operator.shards import _view

    view = _view(lease)
    assert (view.name, view.holder, view.renew_time, view.duration_seconds) == expected
