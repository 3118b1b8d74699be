"""The managed worker Deployment of a Queue, and how many replicas it should run (pure).

This is a purely computational module with no side-effects: it renders the Deployment the operator
owns when ``spec.workers`` is set, and decides autoscaling — ``ceil(pending / backlogPerWorker)``
clamped to ``[min, max]`` — with a cooldown before any scale-down, so a brief dip in backlog does
not kill warm workers. Workers drain in-flight tasks on SIGTERM, so scaling down loses no work.

The time of the last change of replicas is kept on the Deployment (annotation
:data:`SCALED_AT_ANNOTATION`), so the cooldown holds across operator restarts and failovers.
Credentials never appear in the Deployment: they come from a Secret named by the operator's
``KADENCE_WORKER_SECRET`` through ``envFrom``.

The NATS and S3 endpoints the workers get are the operator's own, and a short name in them
(``nats://nats:4222``, ``seaweedfs:8333``) means a Service in the operator's namespace — it would
resolve in the Queue's namespace instead, or not at all. :func:`worker_env` qualifies such names
with the operator's namespace for workers elsewhere.

With NATS identities (the operator's ``KADENCE_NATS_TOKEN_AUDIENCE``), the workers present their
ServiceAccount to NATS instead of shared credentials: the pod gets a projected token of that
audience, which the kubelet rotates, and the worker reads it at every (re)connect
(``KADENCE_NATS_TOKEN_FILE``) and takes its replies under its identity's own inbox prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kadence_operator import timefmt
from kadence_operator.api import QueueSpec, parse_duration
from kadence_operator.identity import permissions

MANAGED_BY = "kadence-operator"
#: Where the worker container finds its projected NATS token (file ``token``).
NATS_TOKEN_DIR = "/var/run/secrets/kadence.io/nats"
#: The projected token's lifetime; the kubelet rotates it at 80 %.
NATS_TOKEN_SECONDS = 3600
#: Annotation on the worker Deployment: when the operator last changed its replicas (RFC 3339).
SCALED_AT_ANNOTATION = "kadence.io/scaled-at"


def deployment_name(queue: str) -> str:
    return f"{queue}-workers"[:63].rstrip("-")


format_time = timefmt.rfc3339


def seconds_since(stamp: str | None, now: datetime) -> float | None:
    """Seconds from the RFC 3339 ``stamp`` to ``now``; None if it is absent or unreadable."""
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: str


def decide_replicas(
    *,
    spec: QueueSpec,
    pending: int | None,
    current: int | None,
    seconds_since_last_scale: float | None,
) -> ScaleDecision:
    """Desired worker replicas for ``pending`` messages (``current`` = replicas now).

    ``pending`` None means the backlog is unknown (NATS not read): the current size is kept,
    clamped to ``[min, max]``; a new Deployment starts at ``min``.
    """
    workers = spec.workers
    if workers is None:
        return ScaleDecision(0, "no workers")
    if workers.autoscale is None:
        return ScaleDecision(workers.replicas if workers.replicas is not None else 1, "fixed")
    auto = workers.autoscale
    if pending is None:
        if current is None:
            return ScaleDecision(auto.min, "initial (backlog unknown)")
        kept = max(auto.min, min(auto.max, current))
        return ScaleDecision(kept, "backlog unknown" if kept == current else "clamped to min/max")
    wanted = math.ceil(max(0, pending) / auto.backlog_per_worker)
    wanted = max(auto.min, min(auto.max, wanted))
    if current is None:
        return ScaleDecision(wanted, f"initial for {pending} pending")
    if wanted < current:
        cooldown = parse_duration(auto.cooldown).total_seconds()
        if seconds_since_last_scale is not None and seconds_since_last_scale < cooldown:
            # The cooldown never keeps more workers than max allows (max lowered in the spec).
            kept = min(current, auto.max)
            return ScaleDecision(kept, f"cooldown ({cooldown:.0f}s) before scaling down")
        return ScaleDecision(wanted, f"scale down for {pending} pending")
    if wanted > current:
        return ScaleDecision(wanted, f"scale up for {pending} pending")
    return ScaleDecision(current, "steady")


#: A host that can only be a Service name relative to some namespace: one DNS label (RFC 1035, as
#: Service names are), so no dot (a qualified name or an IPv4 address) and no IPv6 literal.
_SHORT_HOST = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", re.IGNORECASE)
#: Single-label names that are not Services and mean the same in every namespace.
_NOT_SERVICES = frozenset({"localhost"})


def qualify_endpoint(endpoint: str, namespace: str) -> str:
    """``endpoint`` with a single-label host qualified as a Service of ``namespace``.

    ``seaweedfs:8333`` -> ``seaweedfs.<namespace>.svc:8333``, ``nats://u:p@nats:4222`` ->
    ``nats://u:p@nats.<namespace>.svc:4222``: scheme, user info, port and anything after them are
    kept as they are. A short name resolves through the search path of the pod that looks it up,
    so the operator's ``seaweedfs`` is a Service in the operator's namespace and must be spelled
    out for pods in other namespaces. Qualified names, IP addresses and ``localhost`` are left
    alone, and so is anything that is not a plain ``[scheme://][userinfo@]host[:port]``.
    """
    endpoint = endpoint.strip()
    prefix, rest = "", endpoint
    if "://" in endpoint:
        scheme, _, rest = endpoint.partition("://")
        prefix = f"{scheme}://"
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.partition(":")
    if not _SHORT_HOST.fullmatch(host) or host.lower() in _NOT_SERVICES:
        return endpoint
    if colon and not port.isdigit():
        return endpoint  # not host:port (e.g. an IPv6 address without brackets)
    return f"{prefix}{userinfo}{at}{host}.{namespace}.svc{colon}{port}{tail}"


def worker_env(
    *,
    namespace: str,
    operator_namespace: str,
    nats_urls: Sequence[str],
    output_bucket: str,
    s3_endpoint: str | None,
    s3_secure: bool,
) -> dict[str, str]:
    """The connection settings of the workers of a Queue in ``namespace`` (no credentials).

    They are the operator's own (``KADENCE_NATS_URL``, ``KADENCE_S3_*``, the bucket), with every
    short host qualified with ``operator_namespace`` (:func:`qualify_endpoint`) when the workers
    run in another namespace: there ``nats`` or ``seaweedfs`` would not be the operator's Service.
    """

    def qualify(endpoint: str) -> str:
        if namespace == operator_namespace:
            return endpoint
        return qualify_endpoint(endpoint, operator_namespace)

    env = {
        "KADENCE_NATS_URL": ",".join(qualify(url) for url in nats_urls),
        "KADENCE_OUTPUT_BUCKET": output_bucket,
        "KADENCE_NAMESPACE": namespace,
    }
    if s3_endpoint:
        env["KADENCE_S3_ENDPOINT"] = qualify(s3_endpoint)
        env["KADENCE_S3_SECURE"] = "true" if s3_secure else "false"
    return env


_RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def render_deployment(
    *,
    namespace: str,
    queue: str,
    spec: QueueSpec,
    replicas: int,
    worker_env: dict[str, str],
    secret_name: str | None = None,
    scaled_at: str | None = None,
    nats_token_audience: str | None = None,
) -> dict[str, Any]:
    """The worker Deployment (without ownerReferences; the caller adds the Queue as owner).

    ``worker_env`` carries the connection settings (NATS URL, S3 endpoint, bucket), never
    credentials: those come from the Secret ``secret_name`` in the Queue's namespace, referenced
    with ``envFrom`` (optional, so the workers start without it where no credentials are needed).
    The Queue's own ``workers.env`` wins over both. ``scaled_at`` becomes the
    :data:`SCALED_AT_ANNOTATION`. ``nats_token_audience`` (NATS identities): the pod's
    ServiceAccount token for that audience is projected at :data:`NATS_TOKEN_DIR` and the
    workers connect with it, replies under ``_INBOX.<namespace>.<serviceaccount>``.
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
    worker_env = dict(worker_env)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if nats_token_audience:
        account = workers.service_account_name or "default"
        worker_env["KADENCE_NATS_TOKEN_FILE"] = f"{NATS_TOKEN_DIR}/token"
        worker_env["KADENCE_NATS_INBOX_PREFIX"] = permissions.inbox_prefix(namespace, account)
        volumes.append(
            {
                "name": "kadence-nats-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": nats_token_audience,
                                "expirationSeconds": NATS_TOKEN_SECONDS,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        )
        mounts.append({"name": "kadence-nats-token", "mountPath": NATS_TOKEN_DIR, "readOnly": True})
    own = {e.name for e in workers.env}  # the Queue's env wins; names stay unique (a list map)
    env = [{"name": k, "value": v} for k, v in sorted(worker_env.items()) if k not in own]
    env += [{"name": e.name, "value": e.value} for e in workers.env]
    container: dict[str, Any] = {
        "name": "worker",
        "image": workers.image,
        "command": command,
        "args": args,
        "env": env,
        "securityContext": dict(_RESTRICTED_CONTAINER),
        "volumeMounts": mounts,
    }
    if secret_name:
        container["envFrom"] = [{"secretRef": {"name": secret_name, "optional": True}}]
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
        "volumes": volumes,
    }
    if workers.service_account_name:
        pod_spec["serviceAccountName"] = workers.service_account_name
    if workers.node_selector:
        pod_spec["nodeSelector"] = dict(workers.node_selector)
    if workers.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in workers.tolerations
        ]
    metadata: dict[str, Any] = {
        "name": deployment_name(queue),
        "namespace": namespace,
        "labels": labels,
    }
    if scaled_at:
        metadata["annotations"] = {SCALED_AT_ANNOTATION: scaled_at}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"kadence.io/queue": queue}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
