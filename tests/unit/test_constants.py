"""The names Kadence gives NATS objects and their parsers are inverses of each other."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadence import constants

labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.integers(0, 10_000))
def test_partition_consumer_names_parse_back(partition: int) -> None:
    assert constants.partition_of(constants.consumer_name(partition)) == partition


@given(labels, labels)
def test_queue_stream_names_parse_back(namespace: str, queue: str) -> None:
    assert constants.queue_of_stream(constants.stream_name(namespace, queue)) == (namespace, queue)


@pytest.mark.parametrize(
    "name", ["partition-", "partition-x", "partitions-1", "Partition-1", "kadence-operator-dlq"]
)
def test_other_consumers_are_not_partitions(name: str) -> None:
    assert constants.partition_of(name) is None


@pytest.mark.parametrize(
    "stream",
    [
        constants.dlq_stream_name("ns", "q"),
        constants.RESULTS_STREAM,
        constants.ADVISORIES_STREAM,
        "KADENCE_",
        "OTHER_ns_q",
    ],
)
def test_other_streams_are_not_queues(stream: str) -> None:
    assert constants.queue_of_stream(stream) is None
