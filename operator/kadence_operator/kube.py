"""The Kubernetes API client the operator's own loops use (kopf has its own for handlers).

The official client is synchronous; callers run it with :func:`asyncio.to_thread`. In a pod the
in-cluster ServiceAccount is used, elsewhere ``$KUBECONFIG`` or ``~/.kube/config``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config

from kadence.config import user_agent

#: The operator's ``User-Agent``, hence the field manager of its writes.
USER_AGENT = user_agent("kadence-operator")


def api_client() -> client.ApiClient:
    api: client.ApiClient
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        load: Any = config.load_incluster_config
        load()
        api = client.ApiClient()
    else:
        new_client: Any = config.new_client_from_config
        api = new_client(config_file=os.environ.get("KUBECONFIG"))
    api.user_agent = USER_AGENT
    return api


def micro_time(moment: datetime | None = None) -> str:
    """A Kubernetes ``MicroTime`` string (what Lease ``renewTime`` wants)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
