"""Shard assignment of ``kadence_operator.scheduling.sharding``.

The jump consistent hash vectors are published by other implementations of the same algorithm
(Lamping and Veach 2014): ClickHouse's ``00580_consistent_hashing_functions`` test and
Microsoft's TypeScript port. They are not computed by the code under test.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from kadence_operator.scheduling import jump_consistent_hash, shard_for

# (key, buckets, expected bucket)
JUMP_VECTORS = [
    pytest.param(1, 1, 0, id="clickhouse-1-1"),
    pytest.param(42, 57, 43, id="clickhouse-42-57"),
    pytest.param(256, 1024, 520, id="clickhouse-256-1024"),
    pytest.param(3735883980, 1, 0, id="clickhouse-deadbeef-1"),
    pytest.param(3735883980, 666, 361, id="clickhouse-deadbeef-666"),
    pytest.param(16045690984833335023, 255, 237, id="clickhouse-large-key-255"),
    pytest.param(10863919174838991, 11, 6, id="ms-1"),
    pytest.param(2016238256797177309, 11, 3, id="ms-2"),
    pytest.param(1673758223894951030, 11, 5, id="ms-3"),
    pytest.param(2, 100001, 80343, id="ms-4"),
    pytest.param(2201, 100001, 22152, id="ms-5"),
    pytest.param(2202, 100001, 15018, id="ms-6"),
]


@pytest.mark.parametrize(("key", "buckets", "expected"), JUMP_VECTORS)
def test_jump_consistent_hash_vectors(key: int, buckets: int, expected: int) -> None:
    assert jump_consistent_hash(key, buckets) == expected


@pytest.mark.parametrize(("key", "buckets"), [(1, 0), (1, -3), (-1, 4), (1 << 64, 4)])
def test_jump_consistent_hash_rejects_bad_input(key: int, buckets: int) -> None:
    with pytest.raises(ValueError, match="must"):
        jump_consistent_hash(key, buckets)


UIDS = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"job-{i}.kadence.test")) for i in range(2000)]


def test_shard_for_is_stable_and_in_range() -> None:
    shards = [shard_for(uid, 8) for uid in UIDS]
    assert all(0 <= s < 8 for s in shards)
    assert shards == [shard_for(uid, 8) for uid in UIDS]
    assert {shard_for(uid, 1) for uid in UIDS} == {0}


def test_shard_for_is_roughly_uniform() -> None:
    # 2000 uids over 8 shards: 250 expected, standard deviation ~15.
    counts = Counter(shard_for(uid, 8) for uid in UIDS)
    assert sorted(counts) == list(range(8))
    assert all(190 <= n <= 310 for n in counts.values()), counts


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 15])
def test_growing_moves_about_one_in_n_plus_one_and_only_to_the_new_shard(shards: int) -> None:
    before = {uid: shard_for(uid, shards) for uid in UIDS}
    after = {uid: shard_for(uid, shards + 1) for uid in UIDS}
    moved = [uid for uid in UIDS if before[uid] != after[uid]]
    assert all(after[uid] == shards for uid in moved)
    expected = len(UIDS) / (shards + 1)
    assert 0.7 * expected <= len(moved) <= 1.3 * expected
