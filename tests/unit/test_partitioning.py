"""Key → partition: stable across processes and versions, even, and minimal movement on growth."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadence.partitioning import jump_hash, key_hash, partition_for

# Published vectors of jump consistent hash (github.com/dgryski/go-jump, jump_test.go): our
# implementation agrees with the Go one, so publishers in other languages can match it.
GO_JUMP_VECTORS = [
    (1, 1, 0),
    (42, 57, 43),
    (0xDEAD10CC, 1, 0),
    (0xDEAD10CC, 666, 361),
    (256, 1024, 520),
]

# Computed once with this implementation and frozen: a change here re-routes every keyed message
# of every Queue, so it must be deliberate.
KEY_HASHES = {
    "": 16476032584258269876,
    "a": 4681665781835383343,
    "customer-42": 3738263782846221354,
    "job/default/nightly": 9144089553169922203,
    "üñíçødé": 14084541222498348923,
}
PARTITION_VECTORS = {
    # key: partition for 1, 2, 3, 4, 8, 16, 100 partitions
    "": [0, 0, 2, 2, 5, 5, 62],
    "a": [0, 0, 0, 0, 6, 11, 11],
    "customer-42": [0, 1, 1, 1, 7, 8, 93],
    "job/default/nightly": [0, 1, 1, 1, 1, 1, 48],
    "üñíçødé": [0, 0, 0, 0, 6, 10, 68],
    "x" * 200: [0, 1, 1, 3, 4, 4, 92],
}
COUNTS = [1, 2, 3, 4, 8, 16, 100]
KEYS = [f"key-{i}" for i in range(10_000)]


@pytest.mark.parametrize(("key", "buckets", "expected"), GO_JUMP_VECTORS)
def test_jump_hash_matches_the_reference_implementation(
    key: int, buckets: int, expected: int
) -> None:
    assert jump_hash(key, buckets) == expected


@pytest.mark.parametrize(("key", "expected"), sorted(KEY_HASHES.items()))
def test_key_hash_regression(key: str, expected: int) -> None:
    assert key_hash(key) == expected


@pytest.mark.parametrize(("key", "expected"), sorted(PARTITION_VECTORS.items()))
def test_partition_regression(key: str, expected: list[int]) -> None:
    assert [partition_for(key, n) for n in COUNTS] == expected


@pytest.mark.parametrize("buckets", [0, -1])
def test_no_buckets_is_an_error(buckets: int) -> None:
    with pytest.raises(ValueError, match="buckets must be >= 1"):
        partition_for("k", buckets)


@pytest.mark.parametrize("n", range(1, 17))
def test_growing_moves_about_one_in_n_plus_one_keys_and_only_to_the_new_partition(n: int) -> None:
    before = [partition_for(k, n) for k in KEYS]
    after = [partition_for(k, n + 1) for k in KEYS]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    # Every key that moves goes to the new partition: nothing shuffles between old ones.
    assert all(a == n for _, a in moved)
    fraction = len(moved) / len(KEYS)
    expected = 1 / (n + 1)
    # Binomial standard deviation over 10,000 keys is at most 0.005; allow 4 of them.
    assert abs(fraction - expected) < 0.02, (n, fraction, expected)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 16, 32])
def test_keys_spread_evenly(n: int) -> None:
    keys = [f"tenant-{i}/job-{i % 97}" for i in range(20_000)]
    counts = collections.Counter(partition_for(k, n) for k in keys)
    expected = len(keys) / n
    assert set(counts) == set(range(n))
    # Each partition within 15% of its share (over 5 standard deviations for n <= 32).
    assert all(abs(c - expected) / expected < 0.15 for c in counts.values()), counts
    # And the whole distribution is plausible for a uniform one (chi-square, p > 0.001).
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    critical = {2: 10.8, 3: 13.8, 4: 16.3, 7: 22.5, 8: 24.3, 16: 37.7, 32: 61.1}[n]
    assert chi2 < critical, chi2


@given(key=st.text(max_size=300), n=st.integers(min_value=1, max_value=10_000))
def test_partition_is_in_range_and_deterministic(key: str, n: int) -> None:
    p = partition_for(key, n)
    assert 0 <= p < n
    assert partition_for(key, n) == p
