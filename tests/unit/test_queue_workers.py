"""The worker Deployment of a Queue: autoscaling decisions and the rendered Deployment (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kadence_operator.api import QueueSpec
from kadence_operator.identity.permissions import UnusableName
from kadence_operator.queues.workers import (
    NATS_TOKEN_DIR,
    SCALED_AT_ANNOTATION,
    decide_replicas,
    deployment_name,
    format_time,
    qualify_endpoint,
    render_deployment,
    seconds_since,
    worker_env,
)


def spec(**workers: Any) -> QueueSpec:
    base: dict[str, Any] = {"image": "ghcr.io/example/worker:1.0", "app": "app:app"}
    return QueueSpec.model_validate({"workers": base | workers})


AUTO = spec(autoscale={"min": 1, "max": 4, "backlogPerWorker": 10, "cooldown": "60s"})
AUTO_ZERO = spec(autoscale={"min": 0, "max": 3, "backlogPerWorker": 5, "cooldown": "30s"})


# (spec, pending, current, seconds since the last scale) -> (replicas, reason contains)
DECISIONS = [
    pytest.param(QueueSpec(), 100, None, None, 0, "no workers", id="no-workers"),
    pytest.param(spec(), 500, None, None, 1, "fixed", id="default-one"),
    pytest.param(spec(replicas=3), 0, 1, 0.0, 3, "fixed", id="fixed-ignores-backlog"),
    pytest.param(spec(replicas=0), 50, 2, None, 0, "fixed", id="fixed-zero"),
    pytest.param(AUTO, 0, None, None, 1, "initial", id="initial-empty-is-min"),
    pytest.param(AUTO, 25, None, None, 3, "initial", id="initial-ceil"),
    pytest.param(AUTO, 10_000, None, None, 4, "initial", id="initial-clamped-to-max"),
    pytest.param(AUTO, 11, 1, 5.0, 2, "scale up", id="up-at-once"),
    pytest.param(AUTO, 10, 1, None, 1, "steady", id="exactly-one-worker-of-backlog"),
    pytest.param(AUTO, 40, 4, 1.0, 4, "steady", id="steady-at-max"),
    pytest.param(AUTO, 1000, 2, 0.0, 4, "scale up", id="up-to-max-ignores-cooldown"),
    pytest.param(AUTO, 0, 4, 59.0, 4, "cooldown", id="down-waits-cooldown"),
    pytest.param(AUTO, 0, 4, 60.0, 1, "scale down", id="down-after-cooldown"),
    pytest.param(AUTO, 15, 4, None, 2, "scale down", id="down-unknown-last-scale"),
    pytest.param(AUTO, -5, 2, 120.0, 1, "scale down", id="negative-pending-is-zero"),
    pytest.param(AUTO, 7, 9, 0.0, 4, "cooldown", id="above-max-in-cooldown-kept"),
    pytest.param(AUTO_ZERO, 0, 2, 30.0, 0, "scale down", id="scale-to-zero"),
    pytest.param(AUTO_ZERO, 1, 0, 0.0, 1, "scale up", id="wake-from-zero"),
    pytest.param(AUTO, None, None, None, 1, "backlog unknown", id="unknown-new-is-min"),
    pytest.param(AUTO, None, 3, 0.0, 3, "backlog unknown", id="unknown-keeps-current"),
    pytest.param(AUTO, None, 9, 0.0, 4, "clamped", id="unknown-clamps-to-max"),
    pytest.param(AUTO, None, 0, 0.0, 1, "clamped", id="unknown-clamps-to-min"),
]


@pytest.mark.parametrize(("queue", "pending", "current", "since", "replicas", "reason"), DECISIONS)
def test_decide_replicas(
    queue: QueueSpec,
    pending: int | None,
    current: int | None,
    since: float | None,
    replicas: int,
    reason: str,
) -> None:
    decision = decide_replicas(
        spec=queue, pending=pending, current=current, seconds_since_last_scale=since
    )
    assert decision.replicas == replicas
    assert reason in decision.reason


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        (None, None),
        ("", None),
        ("yesterday", None),
        (format_time(NOW - timedelta(seconds=90)), 90.0),
        ("2026-03-01T11:59:30Z", 30.0),
        ("2026-03-01T11:59:30", 30.0),  # no zone: UTC
        ("2026-03-01T12:00:30Z", 0.0),  # a clock ahead of ours never yields a negative age
    ],
)
def test_seconds_since(stamp: str | None, seconds: float | None) -> None:
    assert seconds_since(stamp, NOW) == seconds


ENV = {
    "KADENCE_NATS_URL": "nats://a:4222,nats://b:4222",
    "KADENCE_OUTPUT_BUCKET": "outputs",
    "KADENCE_NAMESPACE": "team-a",
}


def render(queue: QueueSpec, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "namespace": "team-a",
        "queue": "reports",
        "spec": queue,
        "replicas": 2,
        "worker_env": ENV,
    } | kwargs
    return render_deployment(**options)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_render_defaults() -> None:
    deployment = render(spec(concurrency=4))
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["kind"] == "Deployment"
    assert deployment["metadata"]["name"] == "reports-workers"
    assert deployment["metadata"]["namespace"] == "team-a"
    assert "annotations" not in deployment["metadata"]
    assert "ownerReferences" not in deployment["metadata"]  # the caller adds the Queue
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == {"kadence.io/queue": "reports"}
    assert selector.items() <= labels.items()
    assert labels["app.kubernetes.io/managed-by"] == "kadence-operator"
    worker = container(deployment)
    assert worker["image"] == "ghcr.io/example/worker:1.0"
    assert worker["command"] == ["kadence", "worker"]
    assert worker["args"] == [
        "--queue",
        "reports",
        "--namespace",
        "team-a",
        "--app",
        "app:app",
        "--concurrency",
        "4",
    ]
    assert worker["env"] == [{"name": k, "value": ENV[k]} for k in sorted(ENV)]
    assert "envFrom" not in worker


def test_render_is_restricted() -> None:
    deployment = render(spec())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(deployment)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    # A read-only root file system still needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(deployment)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_render_credentials_come_from_the_secret_only() -> None:
    deployment = render(spec(), secret_name="kadence-worker")
    worker = container(deployment)
    assert worker["envFrom"] == [{"secretRef": {"name": "kadence-worker", "optional": True}}]
    names = {e["name"] for e in worker["env"]}
    for secret in ("KADENCE_S3_ACCESS_KEY", "KADENCE_S3_SECRET_KEY", "KADENCE_NATS_PASSWORD"):
        assert secret not in names


def test_render_queue_env_wins_and_names_stay_unique() -> None:
    deployment = render(
        spec(env=[{"name": "KADENCE_NAMESPACE", "value": "other"}, {"name": "X", "value": "1"}])
    )
    env = container(deployment)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert {"name": "KADENCE_NAMESPACE", "value": "other"} in env
    assert {"name": "X", "value": "1"} in env
    assert {"name": "KADENCE_NATS_URL", "value": ENV["KADENCE_NATS_URL"]} in env


def test_render_custom_command_keeps_args() -> None:
    worker = container(render(spec(app=None, command=["python", "-m", "mine"], args=["--fast"])))
    assert worker["command"] == ["python", "-m", "mine"]
    assert worker["args"] == ["--fast"]


def test_render_pod_options() -> None:
    deployment = render(
        spec(
            serviceAccountName="runner",
            nodeSelector={"pool": "batch"},
            tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            resources={"requests": {"cpu": "250m"}, "limits": {"memory": "512Mi"}},
        ),
        scaled_at="2026-03-01T12:00:00Z",
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    assert container(deployment)["resources"] == {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "512Mi"},
    }
    assert deployment["metadata"]["annotations"] == {SCALED_AT_ANNOTATION: "2026-03-01T12:00:00Z"}


def test_render_is_json_and_needs_workers() -> None:
    json.dumps(render(spec()))  # sent as an apply patch
    with pytest.raises(ValueError, match="workers"):
        render(QueueSpec())


def test_deployment_name_is_a_dns_label() -> None:
    assert deployment_name("q") == "q-workers"
    long = "a" * 60
    name = deployment_name(long)
    assert len(name) <= 63
    assert not name.endswith("-")


# endpoint -> as workers in another namespace get it, the operator running in kadence-system
QUALIFIED = [
    pytest.param("seaweedfs:8333", "seaweedfs.kadence-system.svc:8333", id="s3-short-host-port"),
    pytest.param("minio", "minio.kadence-system.svc", id="s3-short-host-no-port"),
    pytest.param("s3-gw:9000", "s3-gw.kadence-system.svc:9000", id="hyphenated-name"),
    pytest.param("nats://nats:4222", "nats://nats.kadence-system.svc:4222", id="nats-url"),
    pytest.param("nats:4222", "nats.kadence-system.svc:4222", id="nats-without-scheme"),
    pytest.param(
        "tls://u:p%40ss@nats:4222",
        "tls://u:p%40ss@nats.kadence-system.svc:4222",
        id="scheme-and-user-info-kept",
    ),
    pytest.param("ws://nats:8080/ws", "ws://nats.kadence-system.svc:8080/ws", id="path-kept"),
    pytest.param(" seaweedfs:8333 ", "seaweedfs.kadence-system.svc:8333", id="blanks-trimmed"),
    pytest.param("minio.minio:9000", "minio.minio:9000", id="namespaced-name-kept"),
    pytest.param("minio.minio.svc:9000", "minio.minio.svc:9000", id="svc-name-kept"),
    pytest.param("s3.amazonaws.com", "s3.amazonaws.com", id="public-fqdn-kept"),
    pytest.param("seaweedfs.:8333", "seaweedfs.:8333", id="absolute-name-kept"),
    pytest.param("nats://10.0.0.7:4222", "nats://10.0.0.7:4222", id="ipv4-kept"),
    pytest.param("127.0.0.1:9000", "127.0.0.1:9000", id="loopback-ipv4-kept"),
    pytest.param("nats://[fd00::7]:4222", "nats://[fd00::7]:4222", id="ipv6-kept"),
    pytest.param("[::1]:9000", "[::1]:9000", id="loopback-ipv6-kept"),
    pytest.param("nats://localhost:4222", "nats://localhost:4222", id="localhost-kept"),
    pytest.param("LocalHost:9000", "LocalHost:9000", id="localhost-any-case-kept"),
    pytest.param("nats://user@my_host:4222", "nats://user@my_host:4222", id="not-a-service-name"),
    pytest.param("9000:9000", "9000:9000", id="numeric-host-kept"),
    pytest.param("nats:port", "nats:port", id="not-host-port-kept"),
]


@pytest.mark.parametrize(("endpoint", "qualified"), QUALIFIED)
def test_qualify_endpoint(endpoint: str, qualified: str) -> None:
    assert qualify_endpoint(endpoint, "kadence-system") == qualified


def connection_env(namespace: str, *, s3_endpoint: str | None = "seaweedfs:8333") -> dict[str, str]:
    return worker_env(
        namespace=namespace,
        operator_namespace="kadence-system",
        nats_urls=("nats://nats:4222", "nats://u:pw@nats-1:4222", "nats://10.0.0.7:4222"),
        output_bucket="outputs",
        s3_endpoint=s3_endpoint,
        s3_secure=True,
    )


def test_worker_env_in_another_namespace_qualifies_short_hosts() -> None:
    assert connection_env("team-a") == {
        "KADENCE_NATS_URL": (
            "nats://nats.kadence-system.svc:4222,"
            "nats://u:pw@nats-1.kadence-system.svc:4222,"
            "nats://10.0.0.7:4222"
        ),
        "KADENCE_S3_ENDPOINT": "seaweedfs.kadence-system.svc:8333",
        "KADENCE_S3_SECURE": "true",
        "KADENCE_OUTPUT_BUCKET": "outputs",
        "KADENCE_NAMESPACE": "team-a",
    }


def test_worker_env_in_the_operators_namespace_is_the_operators() -> None:
    env = connection_env("kadence-system", s3_endpoint=None)
    assert env["KADENCE_NATS_URL"] == (
        "nats://nats:4222,nats://u:pw@nats-1:4222,nats://10.0.0.7:4222"
    )
    assert "KADENCE_S3_ENDPOINT" not in env
    assert "KADENCE_S3_SECURE" not in env


def test_rendered_deployment_carries_qualified_endpoints() -> None:
    deployment = render(spec(), worker_env=connection_env("team-a"))
    env = {e["name"]: e["value"] for e in container(deployment)["env"]}
    assert env["KADENCE_S3_ENDPOINT"] == "seaweedfs.kadence-system.svc:8333"
    assert env["KADENCE_NATS_URL"].split(",")[0] == "nats://nats.kadence-system.svc:4222"
    assert env["KADENCE_NAMESPACE"] == "team-a"


def test_with_nats_identities_the_workers_present_their_projected_service_account_token() -> None:
    deployment = render(
        spec(serviceAccountName="reports-worker"), nats_token_audience="kadence.io/nats"
    )
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in container(deployment)["env"]}
    assert env["KADENCE_NATS_TOKEN_FILE"] == "/var/run/secrets/kadence.io/nats/token"
    assert env["KADENCE_NATS_INBOX_PREFIX"] == "_INBOX.team-a.reports-worker"
    (projected,) = [v for v in pod["volumes"] if v["name"] == "kadence-nats-token"]
    assert projected["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "kadence.io/nats",
                "expirationSeconds": 3600,
                "path": "token",
            }
        }
    ]
    assert {"name": "kadence-nats-token", "mountPath": NATS_TOKEN_DIR, "readOnly": True} in (
        container(deployment)["volumeMounts"]
    )
    # The pod's own ServiceAccount, or the namespace's default one.
    env = {e["name"]: e["value"] for e in container(render(spec(), nats_token_audience="a"))["env"]}
    assert env["KADENCE_NATS_INBOX_PREFIX"] == "_INBOX.team-a.default"


def test_without_nats_identities_no_token_is_projected() -> None:
    deployment = render(spec(serviceAccountName="reports-worker"))
    assert [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    names = {e["name"] for e in container(deployment)["env"]}
    assert not names & {"KADENCE_NATS_TOKEN_FILE", "KADENCE_NATS_INBOX_PREFIX"}


def test_a_service_account_name_with_dots_cannot_name_a_nats_inbox() -> None:
    with pytest.raises(UnusableName, match=r"workers\.v1"):
        render(spec(serviceAccountName="workers.v1"), nats_token_audience="kadence.io/nats")
