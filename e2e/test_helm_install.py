"""The Helm chart end to end on kind: build the images, install with the bundled NATS and MinIO,
run the examples until a run's output is in the Job's status, upgrade, uninstall.

Needs Docker (e2e/conftest.py skips the folder without it) and network access for the base image
and for the NATS/MinIO images. helm is taken from PATH, else built with Go
(:func:`kadence_devstack.binaries.helm`). The steps themselves (image builds, helm arguments, the
example manifests) live in :mod:`kadence_devstack.kind`, which ``make demo-kind`` uses too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kadence_devstack import kind

CHART = kind.CHART
RELEASE = kind.RELEASE
SYSTEM_NS = kind.SYSTEM_NAMESPACE
DEMO_NS = "demo"
TAG = "e2e"
IMAGES = kind.Images.tagged(TAG)
MINIO_PASSWORD = "e2e-minio-password"

pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    return kind.helm_binary()


@pytest.fixture(scope="module")
def cluster(kind_cluster: Any, helm_binary: Path) -> kind.Cluster:
    """The kind cluster with the Kadence images built and loaded."""
    kind.build_images(IMAGES)
    for image in IMAGES:
        kind_cluster.load_docker_image(image)
    # Pre-load the bundled servers' images when Docker can pull them; otherwise the nodes pull.
    kind.preload_bundled_images(kind_cluster.load_docker_image)
    return kind.Cluster(
        kubeconfig=Path(kind_cluster.kubeconfig_path), helm=helm_binary, demo_namespace=DEMO_NS
    )


def install_args() -> list[str]:
    return kind.helm_install_args(
        tag=TAG, worker_namespaces=[DEMO_NS], minio_password=MINIO_PASSWORD
    )


def has_output(cluster: kind.Cluster, job: str, trigger: str | None = None) -> bool:
    return kind.has_output(cluster.get("jobs.kadence.io", job, DEMO_NS), trigger=trigger)


def test_install_run_upgrade_uninstall(cluster: kind.Cluster) -> None:
    cluster.apply(kind.namespace_manifest(SYSTEM_NS), kind.namespace_manifest(DEMO_NS))

    # Install: CRDs from crds/, the operator (2 replicas), bundled NATS and MinIO.
    cluster.helm("install", RELEASE, CHART, *install_args())
    out = cluster.kubectl("get", "crd", "-o", "name")
    assert "customresourcedefinition.apiextensions.k8s.io/jobs.kadence.io" in out
    operator = cluster.get("deployment", f"{RELEASE}-operator", SYSTEM_NS)
    assert operator["status"].get("readyReplicas") == 2
    cluster.wait_until(
        "the operator replicas to hold shard Leases",
        lambda: bool(
            json.loads(cluster.kubectl("get", "leases", "-n", SYSTEM_NS, "-o", "json"))["items"]
        ),
        timeout=120,
    )

    # The examples: a Queue with operator-run workers and the Jobs.
    cluster.apply(
        kind.demo_queue(namespace=DEMO_NS, image=IMAGES.examples, minio_password=MINIO_PASSWORD),
        *kind.demo_jobs(namespace=DEMO_NS),
    )
    cluster.kubectl("wait", "-n", DEMO_NS, "--for=condition=Ready", "kq/reports", "--timeout=300s")
    cluster.wait_until(
        "the reports worker Deployment to be available",
        lambda: (
            cluster.get("deployment", "reports-workers", DEMO_NS)["status"].get(
                "availableReplicas", 0
            )
            >= 1
        ),
    )
    cluster.wait_until(
        "a run of heartbeat-report with its output in status",
        lambda: has_output(cluster, "heartbeat-report"),
    )

    # Upgrade: three replicas, a new pod template; a manual run still goes through afterwards.
    cluster.helm(
        "upgrade",
        RELEASE,
        CHART,
        *install_args(),
        "--set",
        "replicaCount=3",
        "--set",
        "podAnnotations.e2e/upgraded=yes",
    )
    operator = cluster.get("deployment", f"{RELEASE}-operator", SYSTEM_NS)
    assert operator["spec"]["replicas"] == 3
    assert operator["status"].get("readyReplicas") == 3
    cluster.kubectl(
        "annotate",
        "-n",
        DEMO_NS,
        "kjob/heartbeat-report",
        f"kadence.io/trigger=e2e-{int(time.time())}",
        "--overwrite",
    )
    cluster.wait_until(
        "a manual run after the upgrade with its output in status",
        lambda: has_output(cluster, "heartbeat-report", trigger="Manual"),
    )

    # Uninstall: remove the Jobs and Queues while the operator still runs (it owns finalizers),
    # then the release. Helm keeps the CRDs.
    cluster.kubectl(
        "delete",
        "-n",
        DEMO_NS,
        "jobs.kadence.io,queues.kadence.io",
        "--all",
        "--wait=true",
        "--timeout=180s",
    )
    cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout", "5m")
    leftovers = cluster.kubectl(
        "get",
        "deployment,service,serviceaccount,role,rolebinding",
        "-n",
        SYSTEM_NS,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    )
    assert leftovers.strip() == "", leftovers
    cluster_scoped = cluster.kubectl("get", "clusterrole", "-o", "name")
    assert f"clusterrole.rbac.authorization.k8s.io/{RELEASE}-operator" not in cluster_scoped
    assert "customresourcedefinition.apiextensions.k8s.io/jobs.kadence.io" in cluster.kubectl(
        "get", "crd", "-o", "name"
    )
