"""The Helm chart: lint, render, schema errors, and the rendered manifests on a real API server.

helm is the pinned one from :func:`kadence_devstack.binaries.helm` (``go install``-ed into the
cache on first use, which takes a few minutes once per machine). The rendered manifests are
applied with ``kubectl apply --server-side`` to the suite's kube-apiserver, into namespaces that
enforce the ``restricted`` Pod Security level; RBAC is checked with real ServiceAccount tokens
(TokenRequest), exactly as the pods would meet it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadence_devstack import binaries
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.procs import SetupError

# The first use of helm builds it (minutes); every test here may be the first to ask for it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kadence"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
KUBECTL = Path(sys.executable).parent / "kubectl"
WORKER_NAMESPACES = ("kadence-team-a", "kadence-team-b")

RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}

# A stand-in for prometheus-operator's ServiceMonitor CRD, so the all-features render applies.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return binaries.helm()
    except SetupError as error:
        pytest.fail(f"SetupError: {error}", pytrace=False)


def run(
    argv: Sequence[str | Path], *, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def must(argv: Sequence[str | Path], *, stdin: str | None = None) -> str:
    result = run(argv, stdin=stdin)
    assert result.returncode == 0, (
        f"`{' '.join(str(a) for a in argv)}` exited {result.returncode}:\n"
        f"{result.stderr}\n{result.stdout[-2000:]}"
    )
    return result.stdout


def template_args(
    release: str, namespace: str, values: Iterable[Path] = (), sets: Iterable[str] = ()
) -> list[str]:
    argv = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        argv += ["--values", str(path)]
    for item in sets:
        argv += ["--set", item]
    return argv


def render(
    helm: Path,
    release: str,
    namespace: str,
    *,
    values: Iterable[Path] = (),
    sets: Iterable[str] = (),
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    argv = template_args(release, namespace, values, sets)
    if include_crds:
        argv.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(must([helm, *argv])) if doc]


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return must([KUBECTL, "--kubeconfig", str(kubeconfig), *args], stdin=stdin)


def apply(kube: KubeControlPlane, objects: Sequence[dict[str, Any]]) -> None:
    manifest = yaml.safe_dump_all(objects, sort_keys=False)
    kubectl(
        kube.kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=kadence-chart-test",
        "-f",
        "-",
        stdin=manifest,
    )


def ensure_namespace(kube: KubeControlPlane, name: str, labels: dict[str, str]) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }
    apply(kube, [namespace])


def establish_crds(kube: KubeControlPlane, crds: Sequence[dict[str, Any]]) -> None:
    apply(kube, crds)
    for crd in crds:
        kubectl(
            kube.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{crd['metadata']['name']}",
        )


def pod_from(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """A Pod exactly as the Deployment's ReplicaSet would create it."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"].get("labels", {}),
        },
        "spec": template["spec"],
    }


@dataclass(frozen=True)
class Install:
    namespace: str
    release: str
    objects: list[dict[str, Any]]

    @property
    def operator_sa(self) -> str:
        sa = by_kind(self.objects, "ServiceAccount")
        names = [str(o["metadata"]["name"]) for o in sa]
        names = [n for n in names if n.endswith("-operator")]
        assert len(names) == 1
        return names[0]


class Identity:
    """``kubectl`` as a ServiceAccount, authenticated with a real token from TokenRequest."""

    def __init__(self, kube: KubeControlPlane, namespace: str, name: str) -> None:
        self.kubeconfig = kube.kubeconfig_for_service_account(namespace, name)
        self.name = f"system:serviceaccount:{namespace}:{name}"

    def can(self, verb: str, resource: str, namespace: str | None = None, **flags: str) -> bool:
        argv: list[str | Path] = [KUBECTL, "--kubeconfig", self.kubeconfig, "auth", "can-i"]
        argv += [verb, resource]
        argv += ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
        argv += [f"--{key.replace('_', '-')}={value}" for key, value in flags.items()]
        result = run(argv)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stderr}"
        return answer == "yes"

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], stdin=stdin)


def wait_for_pods(kube: KubeControlPlane, namespace: str, selector: str, count: int) -> None:
    """The ReplicaSet controller created ``count`` pods: Pod Security admitted them."""
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline:
        out = kubectl(kube.kubeconfig, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        seen = len(json.loads(out)["items"])
        if seen >= count:
            return
        time.sleep(0.5)
    events = kubectl(kube.kubeconfig, "get", "events", "-n", namespace)
    raise AssertionError(f"{seen}/{count} pods for {selector} in {namespace}:\n{events}")


# --------------------------------------------------------------------------------------------
# files and rendering (no API server)
# --------------------------------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds() -> None:
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert {"kadence.io_jobs.yaml", "kadence.io_queues.yaml"} <= set(generated), (
        "crds/ is not generated: run `make crds`"
    )
    assert in_chart == generated, "run: python tools/sync_chart_crds.py"
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/kadence/crds/{name} differs from crds/{name}: "
            "run python tools/sync_chart_crds.py"
        )
    check = run([sys.executable, REPO / "tools" / "sync_chart_crds.py", "--check"])
    assert check.returncode == 0, check.stderr


def value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the documented values (free-form maps count as one value)."""
    free_form = {"resources", "podSecurityContext", "containerSecurityContext"}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in free_form:
            yield from value_paths(value, path)
        else:
            yield path


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = (REPO / "docs" / "helm.md").read_text()
    missing = [p for p in value_paths(values) if f"`{p}`" not in docs]
    assert not missing, f"values missing from the table in docs/helm.md: {missing}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


@pytest.mark.parametrize("values", [(), (ALL_FEATURES,)], ids=["default", "all-features"])
def test_helm_lint_is_clean(helm: Path, values: tuple[Path, ...]) -> None:
    argv: list[str | Path] = [helm, "lint", "--strict", CHART]
    for path in values:
        argv += ["--values", path]
    out = must(argv)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out, out
    assert "[ERROR]" not in out, out


def test_default_render(helm: Path) -> None:
    objects = render(helm, "kadence", "kadence-system", include_crds=True)
    kinds = [o["kind"] for o in objects]
    # CRDs come first, so applying the stream in order works.
    assert kinds[:2] == ["CustomResourceDefinition", "CustomResourceDefinition"]
    assert "CustomResourceDefinition" not in kinds[2:]
    assert {o["metadata"]["name"] for o in objects[:2]} == {"jobs.kadence.io", "queues.kadence.io"}
    assert sorted(set(kinds[2:])) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == "kadence-system", obj["metadata"]["name"]
    # Nothing bundled by default.
    assert [d["metadata"]["name"] for d in by_kind(objects, "Deployment")] == ["kadence-operator"]
    deployment = one(objects, "Deployment", "kadence-operator")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/kadence-io/kadence-operator:0.1.0"
    env = env_of(container)
    assert env["KADENCE_NATS_URL"] == "nats://nats:4222"
    assert env["KADENCE_S3_ENDPOINT"] == "minio:9000"
    assert env["KADENCE_S3_SECURE"] == "false"
    assert env["KADENCE_OUTPUT_BUCKET"] == "kadence-outputs"
    assert env["KADENCE_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["KADENCE_OPERATOR_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert (env["KADENCE_SHARDS"], env["KADENCE_LEASE_DURATION"]) == ("32", "15")
    assert (env["KADENCE_LEASE_RENEW"], env["KADENCE_LEASE_RETRY"]) == ("10", "2")
    assert (env["KADENCE_STATUS_INTERVAL"], env["KADENCE_QUEUE_STATUS_INTERVAL"]) == ("5", "10")
    assert (env["KADENCE_DISPATCH_QUIET"], env["KADENCE_DISPATCH_BURST"]) == ("0.2", "100")
    assert env["KADENCE_DISPATCH_STAGE"] == "16"
    assert env["KADENCE_METRICS_PORT"] == "8080"
    # No credentials configured: none referenced.
    assert not {"KADENCE_NATS_USER", "KADENCE_S3_ACCESS_KEY", "KADENCE_NATS_CREDS"} & set(env)
    assert container["args"] == ["--liveness=http://0.0.0.0:8081/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8080,
        "health": 8081,
    }
    assert_restricted(pod)
    # Operator RBAC never mentions Secrets (credentials come in through the pod spec).
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            assert not {"secrets", "*"} & set(rule["resources"]), role["metadata"]["name"]
            assert "*" not in rule["verbs"]
            assert "*" not in rule["apiGroups"]
    leases_role = one(objects, "Role", "kadence-operator-leases")
    assert leases_role["metadata"]["namespace"] == "kadence-system"
    worker_role = one(objects, "ClusterRole", "kadence-worker")
    assert worker_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update", "patch", "delete"],
        },
        {"apiGroups": ["kadence.io"], "resources": ["queues"], "verbs": ["consume"]},
    ]


def assert_restricted(pod: dict[str, Any]) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_all_features_render(helm: Path) -> None:
    objects = render(helm, "kx", "kx-system", values=[ALL_FEATURES])
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("ServiceMonitor", "kx-kadence-operator"),
        ("PodDisruptionBudget", "kx-kadence-operator"),
        ("Deployment", "kx-kadence-nats"),
        ("Deployment", "kx-kadence-minio"),
        ("Secret", "kx-kadence-minio"),
        ("ClusterRole", "kadence-worker-all-features"),
    } <= names
    monitor = one(objects, "ServiceMonitor", "kx-kadence-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    metrics = one(objects, "Service", "kx-kadence-operator-metrics")
    assert metrics["spec"]["ports"][0]["port"] == 9090
    assert one(objects, "PodDisruptionBudget", "kx-kadence-operator")["spec"]["minAvailable"] == 2
    for namespace in WORKER_NAMESPACES:
        account = [
            o
            for o in by_kind(objects, "ServiceAccount")
            if o["metadata"] == {**o["metadata"], "name": "kadence-worker", "namespace": namespace}
        ]
        assert len(account) == 1, namespace
        binding = [
            o for o in by_kind(objects, "RoleBinding") if o["metadata"]["namespace"] == namespace
        ]
        assert len(binding) == 1
        assert binding[0]["roleRef"]["name"] == "kadence-worker-all-features"
        assert binding[0]["subjects"] == [
            {"kind": "ServiceAccount", "name": "kadence-worker", "namespace": namespace}
        ]

    operator = one(objects, "Deployment", "kx-kadence-operator")
    pod = operator["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert env["KADENCE_NATS_URL"] == "nats://kx-kadence-nats.kx-system.svc:4222"
    assert env["KADENCE_S3_ENDPOINT"] == "kx-kadence-minio.kx-system.svc:9000"
    assert env["KADENCE_S3_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "kx-kadence-minio", "key": "accessKey"}
    }
    assert env["KADENCE_NATS_USER"] == {
        "secretKeyRef": {"name": "kadence-nats-auth", "key": "user", "optional": True}
    }
    assert env["KADENCE_NATS_CREDS"] == "/etc/kadence/nats-creds/nats.creds"
    assert env["KADENCE_NATS_CA"] == "/etc/kadence/nats-ca/ca.crt"
    assert env["KADENCE_SHARDS"] == "64"
    assert env["KADENCE_DUPLICATE_WINDOW"] == "60"
    assert (env["KADENCE_DISPATCH_QUIET"], env["KADENCE_DISPATCH_BURST"]) == ("0.3", "50")
    assert env["KADENCE_DISPATCH_STAGE"] == "8"
    assert env["KADENCE_METRICS_PORT"] == "9090"
    assert env["KADENCE_DRIFT_INTERVAL"] == "45"
    assert container["args"] == ["--liveness=http://0.0.0.0:8081/healthz", "--verbose"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"][0]["key"] == "dedicated"
    for deployment in by_kind(objects, "Deployment"):
        assert_restricted(deployment["spec"]["template"]["spec"])
    assert {c["metadata"]["name"] for c in by_kind(objects, "PersistentVolumeClaim")} == {
        "kx-kadence-nats",
        "kx-kadence-minio",
    }


def test_metrics_off_and_single_replica(helm: Path) -> None:
    objects = render(helm, "kadence", "ns", sets=["metrics.enabled=false", "replicaCount=1"])
    kinds = {o["kind"] for o in objects}
    assert "Service" not in kinds
    assert "PodDisruptionBudget" not in kinds, "a single replica must not block node drains"
    container = one(objects, "Deployment", "kadence-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert env_of(container)["KADENCE_METRICS_PORT"] == "0"
    assert [p["name"] for p in container["ports"]] == ["health"]


def test_bundled_nats_fsyncs_every_write_unless_told_otherwise(helm: Path) -> None:
    """Acknowledged runs and results survive a crash of the NATS node's OS (issue #29)."""

    def config(*sets: str) -> str:
        objects = render(helm, "kadence", "ns", sets=["nats.install=true", *sets])
        return str(one(objects, "ConfigMap", "kadence-nats")["data"]["nats-server.conf"])

    assert "sync_interval: always" in config()
    assert "sync_interval: 2m" in config("nats.server.jetstream.syncInterval=2m")
    assert "sync_interval" not in config("nats.server.jetstream.syncInterval=")


def test_nats_url_and_s3_endpoint_are_templates(helm: Path) -> None:
    objects = render(
        helm,
        "rel",
        "ns1",
        sets=[
            "nats.url=nats://{{ .Release.Name }}-nats.{{ .Release.Namespace }}:4222",
            "s3.endpoint=s3.{{ .Release.Namespace }}.svc:443",
            "s3.secure=true",
            "s3.existingSecret=s3-creds",
        ],
    )
    env = env_of(
        one(objects, "Deployment", "rel-kadence-operator")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )
    assert env["KADENCE_NATS_URL"] == "nats://rel-nats.ns1:4222"
    assert env["KADENCE_S3_ENDPOINT"] == "s3.ns1.svc:443"
    assert env["KADENCE_S3_SECURE"] == "true"
    assert env["KADENCE_S3_SECRET_KEY"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "secretKey"}
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-string", "replicaCount=two"], "/replicaCount"),
        (["--set", "replicaCount=0"], "/replicaCount"),
        (["--set", "nats.url=null"], "url"),
        (["--set", "nats.url=http://nats:4222"], "/nats/url"),
        (["--set", "s3.endpoint=https://minio:9000"], "/s3/endpoint"),
        (["--set", "s3.outputBucket=Bad_Bucket"], "/s3/outputBucket"),
        (["--set", "workerNamespaces={Team_A}"], "/workerNamespaces"),
        (["--set", "image.operator.pullPolicy=Sometimes"], "/image/operator/pullPolicy"),
        (["--set", "replicas=3"], "replicas"),
        (["--set", "scheduler.renewDeadline=15"], "scheduler.renewDeadline"),
        (["--set", "scheduler.duplicateWindow=20"], "scheduler.duplicateWindow"),
        (["--set", "scheduler.dispatchQuiet=5"], "/scheduler/dispatchQuiet"),
        (["--set", "scheduler.dispatchStage=-1"], "/scheduler/dispatchStage"),
        (["--set", "nats.server.jetstream.syncInterval=sometimes"], "syncInterval"),
        (
            ["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"],
            "metrics.serviceMonitor.enabled",
        ),
    ],
)
def test_bad_values_fail_with_the_field_name(helm: Path, args: list[str], message: str) -> None:
    result = run([helm, "template", "kadence", CHART, *args])
    assert result.returncode != 0, f"{args} rendered:\n{result.stdout[:500]}"
    assert message in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------
# on the API server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_install(helm: Path, kube: KubeControlPlane) -> Install:
    namespace = f"kadence-{uuid.uuid4().hex[:6]}"
    objects = render(helm, "kadence", namespace, include_crds=True)
    crds = by_kind(objects, "CustomResourceDefinition")
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    establish_crds(kube, crds)
    ensure_namespace(kube, namespace, RESTRICTED_LABELS)
    apply(kube, rest)
    return Install(namespace, "kadence", rest)


@pytest.fixture(scope="module")
def all_features_install(helm: Path, kube: KubeControlPlane) -> Install:
    namespace = f"kx-{uuid.uuid4().hex[:6]}"
    objects = render(helm, "kx", namespace, values=[ALL_FEATURES], include_crds=True)
    crds = [SERVICE_MONITOR_CRD, *by_kind(objects, "CustomResourceDefinition")]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    establish_crds(kube, crds)
    ensure_namespace(kube, namespace, RESTRICTED_LABELS)
    for worker_namespace in WORKER_NAMESPACES:
        ensure_namespace(kube, worker_namespace, RESTRICTED_LABELS)
    apply(kube, rest)
    return Install(namespace, "kx", rest)


def test_default_manifests_are_accepted(kube: KubeControlPlane, default_install: Install) -> None:
    ns = default_install.namespace
    out = kubectl(
        kube.kubeconfig, "get", "deployment,sa,role,rolebinding,svc,pdb", "-n", ns, "-o", "name"
    )
    for expected in (
        "deployment.apps/kadence-operator",
        "serviceaccount/kadence-operator",
        "role.rbac.authorization.k8s.io/kadence-operator-leases",
        "rolebinding.rbac.authorization.k8s.io/kadence-operator-leases",
        "service/kadence-operator-metrics",
        "poddisruptionbudget.policy/kadence-operator",
    ):
        assert expected in out.split(), out
    # The CRDs from the chart serve the resources.
    assert "jobs" in kubectl(
        kube.kubeconfig, "api-resources", "--api-group=kadence.io", "-o", "name"
    )


def test_all_features_manifests_are_accepted(
    kube: KubeControlPlane, all_features_install: Install
) -> None:
    ns = all_features_install.namespace
    out = kubectl(
        kube.kubeconfig, "get", "deployment,servicemonitor,secret,pvc", "-n", ns, "-o", "name"
    )
    for expected in (
        "deployment.apps/kx-kadence-operator",
        "deployment.apps/kx-kadence-nats",
        "deployment.apps/kx-kadence-minio",
        "servicemonitor.monitoring.coreos.com/kx-kadence-operator",
        "secret/kx-kadence-minio",
        "persistentvolumeclaim/kx-kadence-nats",
    ):
        assert expected in out.split(), out
    for worker_ns in WORKER_NAMESPACES:
        kubectl(kube.kubeconfig, "get", "serviceaccount/kadence-worker", "-n", worker_ns)
        kubectl(kube.kubeconfig, "get", "rolebinding/kadence-worker", "-n", worker_ns)


def test_operator_rbac_is_exactly_what_it_needs(
    kube: KubeControlPlane, default_install: Install
) -> None:
    ns = default_install.namespace
    other = "default"
    operator = Identity(kube, ns, default_install.operator_sa)
    allowed = [
        ("list", "jobs.kadence.io", None),
        ("watch", "queues.kadence.io", None),
        ("patch", "jobs.kadence.io", other),
        ("update", "queues.kadence.io", other),
        ("create", "leases.coordination.k8s.io", ns),
        ("update", "leases.coordination.k8s.io", ns),
        ("delete", "leases.coordination.k8s.io", ns),
        ("create", "deployments.apps", other),
        ("patch", "deployments.apps", other),
        ("delete", "deployments.apps", other),
        ("watch", "deployments.apps", None),
        ("create", "events", other),
        ("create", "events.events.k8s.io", other),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("list", "namespaces", None),
    ]
    denied = [
        ("get", "secrets", ns),
        ("list", "secrets", ns),
        ("get", "secrets", other),
        ("list", "secrets", None),
        ("create", "leases.coordination.k8s.io", other),
        ("get", "leases.coordination.k8s.io", other),
        ("list", "leases.coordination.k8s.io", None),
        ("create", "jobs.kadence.io", other),
        ("delete", "queues.kadence.io", other),
        ("get", "configmaps", ns),
        ("create", "pods", other),
        ("create", "rolebindings.rbac.authorization.k8s.io", other),
        ("create", "namespaces", None),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("impersonate", "serviceaccounts", None),
    ]
    wrong = [
        f"cannot {v} {r} in {n or 'all namespaces'}"
        for v, r, n in allowed
        if not operator.can(v, r, n)
    ]
    wrong += [
        f"can {v} {r} in {n or 'all namespaces'}" for v, r, n in denied if operator.can(v, r, n)
    ]
    # Status subresource: patch yes; jobs/finalizers update for blockOwnerDeletion.
    if not operator.can("patch", "jobs.kadence.io", other, subresource="status"):
        wrong.append("cannot patch jobs/status")
    if not operator.can("patch", "queues.kadence.io", other, subresource="status"):
        wrong.append("cannot patch queues/status")
    assert not wrong, f"{operator.name}: " + "; ".join(wrong)


def test_operator_token_really_works(kube: KubeControlPlane, default_install: Install) -> None:
    ns = default_install.namespace
    operator = Identity(kube, ns, default_install.operator_sa)
    listed = operator.kubectl("get", "jobs.kadence.io,queues.kadence.io", "--all-namespaces")
    assert listed.returncode == 0, listed.stderr
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kadence-shard-0", "namespace": ns},
        "spec": {"holderIdentity": "kadence-operator-0", "leaseDurationSeconds": 15},
    }
    created = operator.kubectl("create", "-f", "-", stdin=json.dumps(lease))
    assert created.returncode == 0, created.stderr
    elsewhere = {**lease, "metadata": {"name": "kadence-shard-0", "namespace": "default"}}
    refused = operator.kubectl("create", "-f", "-", stdin=json.dumps(elsewhere))
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    secrets = operator.kubectl("get", "secrets", "-n", ns)
    assert secrets.returncode != 0
    assert "forbidden" in secrets.stderr.lower()


def test_worker_rbac_is_leases_in_its_namespace_only(
    kube: KubeControlPlane, all_features_install: Install
) -> None:
    team_a, team_b = WORKER_NAMESPACES
    worker = Identity(kube, team_a, "kadence-worker")
    allowed = [
        (v, "leases.coordination.k8s.io", team_a)
        for v in ("get", "create", "update", "patch", "delete")
    ]
    # What the NATS auth callout asks for (kubectl auth can-i consume queues/... --as=...).
    allowed.append(("consume", "queues.kadence.io", team_a))
    denied = [
        ("consume", "queues.kadence.io", team_b),
        ("publish", "queues.kadence.io", team_a),
        ("create", "leases.coordination.k8s.io", team_b),
        ("get", "leases.coordination.k8s.io", team_b),
        ("create", "leases.coordination.k8s.io", all_features_install.namespace),
        ("list", "leases.coordination.k8s.io", None),
        ("list", "secrets", team_a),
        ("get", "secrets", team_a),
        ("list", "jobs.kadence.io", team_a),
        ("get", "queues.kadence.io", team_a),
        ("create", "deployments.apps", team_a),
        ("create", "pods", team_a),
    ]
    wrong = [f"cannot {v} {r} in {n}" for v, r, n in allowed if not worker.can(v, r, n)]
    wrong += [
        f"can {v} {r} in {n or 'all namespaces'}" for v, r, n in denied if worker.can(v, r, n)
    ]
    assert not wrong, f"{worker.name}: " + "; ".join(wrong)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kadence-job-report", "namespace": team_a},
        "spec": {"holderIdentity": "worker-1", "leaseDurationSeconds": 30},
    }
    created = worker.kubectl("create", "-f", "-", stdin=json.dumps(lease))
    assert created.returncode == 0, created.stderr
    deleted = worker.kubectl("delete", "lease", "kadence-job-report", "-n", team_a)
    assert deleted.returncode == 0, deleted.stderr


def test_pod_security_restricted_admits_every_pod(
    kube: KubeControlPlane, default_install: Install, all_features_install: Install
) -> None:
    deployments = by_kind(default_install.objects, "Deployment") + by_kind(
        all_features_install.objects, "Deployment"
    )
    assert len(deployments) == 4
    for deployment in deployments:
        pod = pod_from(deployment, f"{deployment['metadata']['name']}-psa-check")
        result = run(
            [KUBECTL, "--kubeconfig", kube.kubeconfig, "create", "--dry-run=server", "-f", "-"],
            stdin=json.dumps(pod),
        )
        assert result.returncode == 0, f"{deployment['metadata']['name']}: {result.stderr}"
        assert "would violate" not in result.stderr, result.stderr
    # The namespace really enforces restricted: a root pod is refused.
    root = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-psa-check", "namespace": default_install.namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    refused = run(
        [KUBECTL, "--kubeconfig", kube.kubeconfig, "create", "--dry-run=server", "-f", "-"],
        stdin=json.dumps(root),
    )
    assert refused.returncode != 0, "a root pod was admitted: the namespace does not enforce"
    assert "PodSecurity" in refused.stderr, refused.stderr


def test_controller_creates_the_operator_pods(
    kube: KubeControlPlane, default_install: Install
) -> None:
    if not kube.has_controller_manager:
        pytest.skip("no kube-controller-manager: ReplicaSets are not reconciled")
    wait_for_pods(
        kube,
        default_install.namespace,
        "app.kubernetes.io/instance=kadence,app.kubernetes.io/component=operator",
        2,
    )


def test_helm_install_upgrade_uninstall(helm: Path, kube: KubeControlPlane) -> None:
    """The real helm lifecycle against the API server (pods are not run: there is no kubelet)."""
    namespace = f"khelm-{uuid.uuid4().hex[:6]}"
    ensure_namespace(kube, namespace, RESTRICTED_LABELS)
    base: list[str | Path] = [helm, "--kubeconfig", kube.kubeconfig, "--namespace", namespace]
    # A release of its own: cluster-scoped names must not clash with the other tests' objects.
    own = ["--set", "workers.clusterRoleName=kadence-worker-helm-test"]
    installed = must([*base, "install", "khelm", CHART, *own])
    assert "STATUS: deployed" in installed
    notes = installed.split("NOTES:", 1)[1]
    assert "deployment/khelm-kadence-operator" in notes
    assert "nats://nats:4222" in notes
    assert "kadence-worker-helm-test" in notes
    deployment = json.loads(
        kubectl(
            kube.kubeconfig,
            "get",
            "deployment/khelm-kadence-operator",
            "-n",
            namespace,
            "-o",
            "json",
        )
    )
    assert deployment["spec"]["replicas"] == 2

    upgraded = must([*base, "upgrade", "khelm", CHART, *own, "--set", "replicaCount=3"])
    assert "STATUS: deployed" in upgraded
    deployment = json.loads(
        kubectl(
            kube.kubeconfig,
            "get",
            "deployment/khelm-kadence-operator",
            "-n",
            namespace,
            "-o",
            "json",
        )
    )
    assert deployment["spec"]["replicas"] == 3
    assert json.loads(must([*base, "history", "khelm", "-o", "json"]))[-1]["revision"] == 2

    must([*base, "uninstall", "khelm"])
    left = kubectl(
        kube.kubeconfig,
        "get",
        "deployment,sa,role,rolebinding,svc,pdb",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/instance=khelm",
        "-o",
        "name",
    )
    assert left.split() == [], left
    roles = kubectl(kube.kubeconfig, "get", "clusterrole", "-o", "name").split()
    assert "clusterrole.rbac.authorization.k8s.io/khelm-kadence-operator" not in roles
    assert "clusterrole.rbac.authorization.k8s.io/kadence-worker-helm-test" not in roles
    # Helm never deletes CRDs.
    kubectl(kube.kubeconfig, "get", "crd/jobs.kadence.io")
