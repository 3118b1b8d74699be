"""Kadence installed on a real cluster the way docs/helm.md tells users to.

For: the e2e tests and ``make demo`` on the local node (:mod:`kadence_devstack.node`). The release
namespace and the examples' namespace enforce the ``restricted`` Pod Security Standard; NATS runs
in the cluster (the chart's ``nats.install``, from our locally built image); S3 runs in the cluster
as its own Deployment (SeaweedFS, as a user's own MinIO would be) and reaches the operator through
``s3.endpoint`` and ``s3.existingSecret`` — a short Service name, as users write it. Not for: the
kind path (:mod:`kadence_devstack.kind`), whose images come from ``docker build``.

The manifest and argument builders are pure; :func:`install` runs them against a cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kadence_devstack import kind
from kadence_devstack.kind import Cluster, Say, _quiet

RELEASE = kind.RELEASE
SYSTEM_NAMESPACE = kind.SYSTEM_NAMESPACE
S3_SERVICE, S3_PORT = "seaweedfs", 8333
S3_SECRET = "kadence-s3"
S3_ACCESS_KEY = "kadence"


@dataclass(frozen=True)
class LocalImages:
    """Image references of a locally built set (``localhost/<name>:<input hash>``)."""

    operator: str
    worker: str
    examples: str
    nats: str
    seaweedfs: str


def _split(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def s3_manifests(
    *, namespace: str, image: str, access_key: str, secret_key: str
) -> list[dict[str, Any]]:
    """SeaweedFS's S3 gateway as its own Deployment and Service, its keys in the Secret the chart
    reads (``s3.existingSecret``), every pod field within the ``restricted`` profile. Pure."""
    labels = {"app.kubernetes.io/name": "seaweedfs"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"accessKey": access_key, "secretKey": secret_key},
    }

    def from_secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}}

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": S3_SERVICE, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "seaweedfs",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["weed"],
                            "args": [
                                "mini",
                                "-dir=/data",
                                "-ip=$(POD_IP)",
                                "-ip.bind=0.0.0.0",
                                f"-s3.port={S3_PORT}",
                                "-s3.port.iceberg=0",
                                "-s3.port.lance=0",
                                "-webdav=false",
                                "-admin.ui=false",
                            ],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {"name": "HOME", "value": "/tmp"},
                                # weed mini makes its admin identity from these two.
                                from_secret("AWS_ACCESS_KEY_ID", "accessKey"),
                                from_secret("AWS_SECRET_ACCESS_KEY", "secretKey"),
                            ],
                            "ports": [{"name": "s3", "containerPort": S3_PORT}],
                            "readinessProbe": {
                                "tcpSocket": {"port": "s3"},
                                "periodSeconds": 2,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": S3_SERVICE, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "s3", "port": S3_PORT, "targetPort": "s3"}],
        },
    }
    return [secret, deployment, service]


def helm_args(
    *,
    images: LocalImages,
    worker_namespaces: Sequence[str],
    namespace: str = SYSTEM_NAMESPACE,
    extra: Mapping[str, str] | None = None,
    timeout: str = "5m",
) -> list[str]:
    """Arguments after ``helm install|upgrade RELEASE CHART``: our images (never pulled), the
    bundled NATS from our image, S3 by its short Service name and the Secret with its keys, the
    worker ServiceAccount in ``worker_namespaces``, any ``extra`` values, and a wait. Pure."""
    operator_repo, operator_tag = _split(images.operator)
    worker_repo, worker_tag = _split(images.worker)
    nats_repo, nats_tag = _split(images.nats)
    values = {
        "image.operator.repository": operator_repo,
        "image.operator.tag": operator_tag,
        "image.operator.pullPolicy": "Never",
        "image.worker.repository": worker_repo,
        "image.worker.tag": worker_tag,
        "nats.install": "true",
        "nats.server.image.repository": nats_repo,
        "nats.server.image.tag": nats_tag,
        "nats.server.image.pullPolicy": "Never",
        "s3.endpoint": f"{S3_SERVICE}:{S3_PORT}",
        "s3.existingSecret": S3_SECRET,
        "workerNamespaces": "{" + ",".join(worker_namespaces) + "}",
        **(extra or {}),
    }
    args = ["--namespace", namespace]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return [*args, "--wait", "--timeout", timeout]


def examples_queue(
    *, namespace: str, image: str, access_key: str, secret_key: str, autoscale: bool = True
) -> dict[str, Any]:
    """``examples/queue.yaml`` with the examples image and the S3 keys, autoscaling as in the file
    unless ``autoscale`` is False (then one worker)."""
    return kind.example_queue(
        namespace=namespace,
        image=image,
        access_key=access_key,
        secret_key=secret_key,
        autoscale=autoscale,
    )


@dataclass(frozen=True)
class Installed:
    """What :func:`install` set up: where S3 is and its keys (for the tests' own checks)."""

    s3_access_key: str
    s3_secret_key: str


def install(
    cluster: Cluster,
    *,
    images: LocalImages,
    worker_namespaces: Sequence[str],
    extra: Mapping[str, str] | None = None,
    say: Say = _quiet,
) -> Installed:
    """Namespaces (``restricted``), S3 with its Secret, then ``helm install`` and its wait."""
    cluster.apply(
        kind.namespace_manifest(SYSTEM_NAMESPACE),
        *(kind.namespace_manifest(ns) for ns in worker_namespaces),
    )
    secret_key = secrets.token_hex(20)
    cluster.apply(
        *s3_manifests(
            namespace=SYSTEM_NAMESPACE,
            image=images.seaweedfs,
            access_key=S3_ACCESS_KEY,
            secret_key=secret_key,
        )
    )
    cluster.kubectl(
        "rollout",
        "status",
        "-n",
        SYSTEM_NAMESPACE,
        f"deployment/{S3_SERVICE}",
        "--timeout=180s",
        what="waiting for S3 (SeaweedFS) to be ready",
        say=say,
    )
    cluster.helm(
        "install",
        RELEASE,
        kind.CHART,
        *helm_args(images=images, worker_namespaces=worker_namespaces, extra=extra),
        what="helm install kadence charts/kadence",
        say=say,
    )
    return Installed(s3_access_key=S3_ACCESS_KEY, s3_secret_key=secret_key)
