"""The Helm chart end to end on kind: build the images, install with the bundled NATS and MinIO,
run the examples until a run's output is in the Job's status, upgrade, uninstall.

Needs Docker (e2e/conftest.py skips the folder without it) and network access for the base image
and for the NATS/MinIO images. helm is taken from PATH, else built with Go
(:func:`kadence_devstack.binaries.helm`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadence_devstack import binaries

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kadence"
KUBECTL = Path(sys.executable).parent / "kubectl"
RELEASE = "kadence"
SYSTEM_NS = "kadence-system"
DEMO_NS = "demo"
TAG = "e2e"
OPERATOR_IMAGE = f"kadence-operator:{TAG}"
WORKER_IMAGE = f"kadence-worker:{TAG}"
EXAMPLES_IMAGE = f"kadence-examples:{TAG}"
MINIO_PASSWORD = "e2e-minio-password"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

pytestmark = pytest.mark.timeout(3600)


def sh(argv: list[str | Path], *, stdin: str | None = None, timeout: float = 900) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(str(a) for a in argv)}` exited {result.returncode}:\n"
            f"{result.stderr[-4000:]}\n{result.stdout[-2000:]}"
        )
    return result.stdout


class Cluster:
    """kubectl and helm against the kind cluster."""

    def __init__(self, kind_cluster: Any, helm: Path) -> None:
        self.kind = kind_cluster
        self.kubeconfig = Path(kind_cluster.kubeconfig_path)
        self.helm_path = helm

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return sh([KUBECTL, "--kubeconfig", self.kubeconfig, *args], stdin=stdin)

    def helm(self, *args: str | Path, timeout: float = 900) -> str:
        return sh([self.helm_path, "--kubeconfig", self.kubeconfig, *args], timeout=timeout)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return body

    def diagnostics(self) -> str:
        parts = []
        for args in (
            ["get", "pods,deploy,kq,kjob,leases", "-A", "-o", "wide"],
            ["get", "events", "-A", "--sort-by=.lastTimestamp"],
            ["logs", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator", "--tail=80"],
            ["logs", "-n", DEMO_NS, "-l", "kadence.io/queue=reports", "--tail=80"],
        ):
            try:
                parts.append(self.kubectl(*args))
            except AssertionError as error:
                parts.append(str(error))
        return "\n".join(parts)[-12000:]


def wait_until(
    cluster: Cluster, what: str, check: Callable[[], bool], *, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except AssertionError:
            pass
        time.sleep(3)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}\n{cluster.diagnostics()}"
    )


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    found = shutil.which("helm")
    return Path(found) if found else binaries.helm()


@pytest.fixture(scope="module")
def cluster(kind_cluster: Any, helm_binary: Path) -> Cluster:
    """The kind cluster with the Kadence images built and loaded."""
    assert (REPO / "examples" / "app.py").is_file(), (
        "examples/app.py (the example tasks) is missing"
    )
    sh(["docker", "build", "-f", REPO / "operator" / "Dockerfile", "-t", OPERATOR_IMAGE, REPO])
    sh(["docker", "build", "-f", REPO / "worker" / "Dockerfile", "-t", WORKER_IMAGE, REPO])
    examples_dockerfile = f"FROM {WORKER_IMAGE}\nCOPY --chown=65532:65532 examples/ /app/\n"
    sh(["docker", "build", "-f", "-", "-t", EXAMPLES_IMAGE, REPO], stdin=examples_dockerfile)
    for image in (OPERATOR_IMAGE, WORKER_IMAGE, EXAMPLES_IMAGE):
        kind_cluster.load_docker_image(image)
    # Pre-load the bundled servers' images when Docker can pull them; otherwise the nodes pull.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for image in (values["nats"]["server"]["image"], values["minio"]["image"]):
        ref = f"{image['repository']}:{image['tag']}"
        pulled = subprocess.run(["docker", "pull", ref], capture_output=True, check=False)
        if pulled.returncode == 0:
            kind_cluster.load_docker_image(ref)
    return Cluster(kind_cluster, helm_binary)


def install_args() -> list[str]:
    return [
        "--namespace",
        SYSTEM_NS,
        "--set",
        f"image.operator.repository=kadence-operator,image.operator.tag={TAG}",
        "--set",
        "image.operator.pullPolicy=Never",
        "--set",
        f"image.worker.repository=kadence-worker,image.worker.tag={TAG}",
        "--set",
        "nats.install=true",
        "--set",
        "minio.install=true",
        "--set",
        f"minio.rootPassword={MINIO_PASSWORD}",
        "--set",
        f"workerNamespaces={{{DEMO_NS}}}",
        "--wait",
        "--timeout",
        "8m",
    ]


def demo_queue() -> dict[str, Any]:
    """examples/queue.yaml, with the e2e image, the chart's worker ServiceAccount and S3 keys."""
    queue: dict[str, Any] = yaml.safe_load((REPO / "examples" / "queue.yaml").read_text())
    queue["metadata"]["namespace"] = DEMO_NS
    workers = queue["spec"]["workers"]
    workers["image"] = EXAMPLES_IMAGE
    workers["serviceAccountName"] = "kadence-worker"
    workers.pop("autoscale", None)
    workers["replicas"] = 1
    # The operator passes endpoints, not credentials, to the workers it runs.
    workers["env"] = [
        *workers.get("env", []),
        {"name": "KADENCE_S3_ACCESS_KEY", "value": "kadence"},
        {"name": "KADENCE_S3_SECRET_KEY", "value": MINIO_PASSWORD},
    ]
    return queue


def demo_jobs() -> list[dict[str, Any]]:
    jobs = []
    for path in sorted((REPO / "examples").glob("job-*.yaml")):
        job: dict[str, Any] = yaml.safe_load(path.read_text())
        job["metadata"]["namespace"] = DEMO_NS
        jobs.append(job)
    return jobs


def has_output(cluster: Cluster, job: str, trigger: str | None = None) -> bool:
    status = cluster.get("jobs.kadence.io", job, DEMO_NS).get("status") or {}
    for run in status.get("runs") or []:
        if trigger is not None and run.get("trigger") != trigger:
            continue
        if run.get("state") == "Succeeded" and run.get("output"):
            return True
    return False


def test_install_run_upgrade_uninstall(cluster: Cluster) -> None:
    for namespace in (SYSTEM_NS, DEMO_NS):
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": RESTRICTED},
            }
        )

    # Install: CRDs from crds/, the operator (2 replicas), bundled NATS and MinIO.
    cluster.helm("install", RELEASE, CHART, *install_args())
    out = cluster.kubectl("get", "crd", "-o", "name")
    assert "customresourcedefinition.apiextensions.k8s.io/jobs.kadence.io" in out
    operator = cluster.get("deployment", f"{RELEASE}-operator", SYSTEM_NS)
    assert operator["status"].get("readyReplicas") == 2
    wait_until(
        cluster,
        "the operator replicas to hold shard Leases",
        lambda: bool(
            json.loads(cluster.kubectl("get", "leases", "-n", SYSTEM_NS, "-o", "json"))["items"]
        ),
        timeout=120,
    )

    # The examples: a Queue with operator-run workers and the Jobs.
    cluster.apply(demo_queue(), *demo_jobs())
    cluster.kubectl("wait", "-n", DEMO_NS, "--for=condition=Ready", "kq/reports", "--timeout=300s")
    wait_until(
        cluster,
        "the reports worker Deployment to be available",
        lambda: (
            cluster.get("deployment", "reports-workers", DEMO_NS)["status"].get(
                "availableReplicas", 0
            )
            >= 1
        ),
    )
    wait_until(
        cluster,
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
    wait_until(
        cluster,
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
