"""Shard Leases against a real API server: what one replica's renewal rounds cost.

The fail-over and the split between replicas are tested end to end in ``test_scheduling.py``;
here one :class:`ShardLeases` is driven round by round, as its thread does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client, config

from kadence_devstack.kube import KubeControlPlane
from kadence_operator import kube as kube_api
from kadence_operator import shardplan
from kadence_operator.settings import OperatorSettings
from kadence_operator.shards import LEASE_LABEL, ShardLeases

pytestmark = pytest.mark.integration


def _open_connections(api: client.ApiClient) -> int:
    pools: Any = api.rest_client.pool_manager.pools
    return sum(pool.num_connections for pool in pools._container.values())


@pytest.fixture
def shard_space(kube: KubeControlPlane) -> Iterator[tuple[client.ApiClient, str]]:
    """An API client and a namespace of its own (other tests' operators keep their shard
    Leases in "default"), deleted afterwards."""
    new_client: Any = config.new_client_from_config
    api: client.ApiClient = new_client(config_file=str(kube.kubeconfig))
    namespace = f"shards-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        yield api, namespace
    finally:
        core.delete_namespace(namespace)
        api.close()


def test_lease_rounds_reuse_one_connection(shard_space: tuple[client.ApiClient, str]) -> None:
    """Every round lists the Leases and rewrites the held ones; the writes' unread answers must
    go back to the pool, or each write opens (and TLS-handshakes) a connection of its own."""
    api, namespace = shard_space
    settings = OperatorSettings(
        operator_namespace=namespace,
        operator_id=f"op-{uuid.uuid4().hex[:6]}",
        shards=4,
        lease_duration=3,
        lease_renew=0.05,  # every round renews every shard
        lease_retry=1,
    )
    leases = ShardLeases(api=api, settings=settings)
    rounds = 5
    for _ in range(rounds):
        assert leases._step() == []
        time.sleep(0.06)
    assert leases.owned() == frozenset(range(4))
    held = [
        lease
        for lease in client.CoordinationV1Api(api).list_namespaced_lease(namespace).items
        if lease.spec.holder_identity == settings.operator_id
    ]
    assert len(held) == 5  # four shards and the member Lease
    # 5 rounds x (1 list + 4 shard writes) + member writes: 25+ requests on one connection.
    assert _open_connections(api) == 1


def _renew_as(api: client.ApiClient, namespace: str, holder: str, shards: int) -> None:
    """Write ``holder``'s member and shard Leases as a live replica whose wall clock is 90 s
    behind would: renewed now, ``renewTime`` 90 s ago by the others' clocks."""
    leases = client.CoordinationV1Api(api)
    behind = kube_api.micro_time(datetime.now(UTC) - timedelta(seconds=90))
    names = [(f"{shardplan.MEMBER_LEASE_PREFIX}{holder}", "member")]
    names += [(shardplan.shard_lease_name(s), "shard") for s in range(shards)]
    for name, role in names:
        body: dict[str, Any] = {
            "metadata": {"name": name, "labels": {LEASE_LABEL: role}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3, "renewTime": behind},
        }
        try:
            current = leases.read_namespaced_lease(name, namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
            leases.create_namespaced_lease(namespace, body)
            continue
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        leases.replace_namespaced_lease(name, namespace, body)


def test_a_live_replica_with_its_clock_behind_keeps_its_shards(
    shard_space: tuple[client.ApiClient, str],
) -> None:
    """Whether another replica's Lease expired is judged by this replica's clock, from when it
    saw the Lease change (as client-go's leader election does), not from the ``renewTime`` the
    holder's clock wrote: the fault suite's clock-jump had a replica take all the shards of one
    whose clock had jumped back, although it kept renewing them."""
    api, namespace = shard_space
    settings = OperatorSettings(
        operator_namespace=namespace,
        operator_id="op-b",
        shards=2,
        lease_duration=3,
        lease_renew=1,
        lease_retry=1,
    )
    other = ShardLeases(api=api, settings=settings)
    for _ in range(4):  # 4 s of rounds: longer than the lease duration
        _renew_as(api, namespace, "op-a", shards=2)
        renewed = time.monotonic()
        assert other._step() == []
        assert other.owned() == frozenset()
        time.sleep(1.0)
    # op-a stops renewing: its shards are taken once they stayed unchanged 3 s.
    while not other.owned() and time.monotonic() - renewed < 10:
        other._step()
        time.sleep(0.2)
    assert other.owned() == frozenset({0, 1})
    assert time.monotonic() - renewed >= 3.0
