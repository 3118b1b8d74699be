"""The managed worker Deployment of a Queue, and how many replicas it should run (pure).

This is a purely computational module with no side-effects: it renders the Deployment the operator
owns when ``spec.workers`` is set, and decides autoscaling — ``ceil(pending / backlogPerWorker)``
clamped to ``[min, max]`` — with a cooldown before any scale-down, so a brief dip in backlog does
not kill warm workers. Workers drain in-flight tasks on SIGTERM, so scaling down loses no work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kadence_operator.api import QueueSpec, parse_duration

MANAGED_BY = "kadence-operator"


def deployment_name(queue: str) -> str:
    return f"{queue}-workers"[:63].rstrip("-")


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: str


def decide_replicas(
    *,
    spec: QueueSpec,
    pending: int,
    current: int | None,
    seconds_since_last_scale: float | None,
) -> ScaleDecision:
    """Desired worker replicas for ``pending`` messages (``current`` = replicas now)."""
    workers = spec.workers
    if workers is None:
        return ScaleDecision(0, "no workers")
    if workers.autoscale is None:
        return ScaleDecision(workers.replicas if workers.replicas is not None else 1, "fixed")
    auto = workers.autoscale
    wanted = math.ceil(max(0, pending) / auto.backlog_per_worker)
    wanted = max(auto.min, min(auto.max, wanted))
    if current is None:
        return ScaleDecision(wanted, f"initial for {pending} pending")
    if wanted < current:
        cooldown = parse_duration(auto.cooldown).total_seconds()
        if seconds_since_last_scale is not None and seconds_since_last_scale < cooldown:
            return ScaleDecision(current, f"cooldown ({cooldown:.0f}s) before scaling down")
        return ScaleDecision(wanted, f"scale down for {pending} pending")
    if wanted > current:
        return ScaleDecision(wanted, f"scale up for {pending} pending")
    return ScaleDecision(current, "steady")


_RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def render_deployment(
    *, namespace: str, queue: str, spec: QueueSpec, replicas: int, worker_env: dict[str, str]
) -> dict[str, Any]:
    """The worker Deployment (without ownerReferences; the caller adopts it).

    ``worker_env`` carries the connection settings (NATS URL, S3 endpoint, bucket); credentials
    are referenced from Secrets by the chart's defaults, never inlined here.
    """
    workers = spec.workers
    if workers is None:
        raise ValueError("spec.workers is not set")
    labels = {
        "app.kubernetes.io/name": "kadence-worker",
        "app.kubernetes.io/instance": queue,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "kadence.io/queue": queue,
    }
    command = list(workers.command) or ["kadence", "worker"]
    args = list(workers.args)
    if not workers.command:
        args = [
            "--queue",
            queue,
            "--namespace",
            namespace,
            "--app",
            workers.app or "",
            "--concurrency",
            str(workers.concurrency),
            *args,
        ]
    env = [{"name": k, "value": v} for k, v in sorted(worker_env.items())]
    env += [{"name": e.name, "value": e.value} for e in workers.env]
    container: dict[str, Any] = {
        "name": "worker",
        "image": workers.image,
        "command": command,
        "args": args,
        "env": env,
        "securityContext": dict(_RESTRICTED_CONTAINER),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if workers.resources is not None:
        container["resources"] = workers.resources.model_dump(by_alias=True, exclude_none=True)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Long enough for in-flight tasks to drain after SIGTERM.
        "terminationGracePeriodSeconds": 60,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if workers.service_account_name:
        pod_spec["serviceAccountName"] = workers.service_account_name
    if workers.node_selector:
        pod_spec["nodeSelector"] = dict(workers.node_selector)
    if workers.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in workers.tolerations
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(queue), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"kadence.io/queue": queue}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
