"""Shard Leases against a real API server: what one replica's renewal rounds cost.

The fail-over and the split between replicas are tested end to end in ``test_scheduling.py``;
here one :class:`ShardLeases` is driven round by round, as its thread does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client, config

from kadence_devstack.kube import KubeControlPlane
from kadence_operator.settings import OperatorSettings
from kadence_operator.shards import ShardLeases

pytestmark = pytest.mark.integration


def _open_connections(api: client.ApiClient) -> int:
    pools: Any = api.rest_client.pool_manager.pools
    return sum(pool.num_connections for pool in pools._container.values())


def test_lease_rounds_reuse_one_connection(kube: KubeControlPlane) -> None:
    """Every round lists the Leases and rewrites the held ones; the writes' unread answers must
    go back to the pool, or each write opens (and TLS-handshakes) a connection of its own."""
    new_client: Any = config.new_client_from_config
    api: client.ApiClient = new_client(config_file=str(kube.kubeconfig))
    # A namespace of its own: other tests' operators keep their shard Leases in "default".
    namespace = f"shards-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    settings = OperatorSettings(
        operator_namespace=namespace,
        operator_id=f"op-{uuid.uuid4().hex[:6]}",
        shards=4,
        lease_duration=3,
        lease_renew=0.05,  # every round renews every shard
        lease_retry=1,
    )
    leases = ShardLeases(api=api, settings=settings)
    try:
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
    finally:
        core.delete_namespace(namespace)
        api.close()
