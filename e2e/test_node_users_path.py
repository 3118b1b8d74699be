"""The users' path on the local node: ``helm install`` as docs/helm.md says, the examples on worker
pods, and what a cluster does to pods — operator fail-over, a worker killed mid-task, autoscaling,
a rolling upgrade, ``helm uninstall``.

The tests run in file order on one installation (the module fixture): each step leaves the cluster
as the next expects, as a user's cluster would go through them. Three sources are checked against
each other: the Kubernetes objects, JetStream's results stream (read through a relay into the node)
and S3 (likewise).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from minio import Minio

from kadence import constants, protocol
from kadence_devstack import binaries, demo, install, kind, node

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

NS = "demo"
SYSTEM = install.SYSTEM_NAMESPACE
LEASE_SECONDS = 10  # scheduler.leaseDuration, shorter than the chart's 15 to keep the test short
FINAL = {"Succeeded", "Failed", "TimedOut", "Cancelled", "DeadLettered"}


@dataclass
class Env:
    local: node.LocalNode
    cluster: kind.Cluster
    images: install.LocalImages
    installed: install.Installed
    nats_port: int
    s3_port: int

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.cluster.kubectl(*args, "-o", "json"))
        return body

    def s3(self) -> Minio:
        return Minio(
            f"127.0.0.1:{self.s3_port}",
            access_key=self.installed.s3_access_key,
            secret_key=self.installed.s3_secret_key,
            secure=False,
        )

    def results(self) -> list[protocol.RunResult]:
        """Every run result in the results stream (limits retention: nothing is removed)."""
        return asyncio.run(_read_results(self.nats_port))

    def job(self, name: str) -> dict[str, Any]:
        return self.cluster.get("jobs.kadence.io", name, NS)


async def _read_results(port: int) -> list[protocol.RunResult]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info(constants.RESULTS_STREAM)
        results: list[protocol.RunResult] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(constants.RESULTS_STREAM, seq)
            assert message.data is not None
            decoded = protocol.decode_results(message.data)
            assert not decoded.errors, decoded.errors
            results += decoded.results
        return results
    finally:
        await nc.close()


def _cluster_ip(cluster: kind.Cluster, namespace: str, service: str) -> str:
    return str(cluster.get("service", service, namespace)["spec"]["clusterIP"])


@pytest.fixture(scope="module")
def env(local_node: node.LocalNode) -> Env:
    cluster = kind.Cluster(
        kubeconfig=local_node.kubeconfig, helm=binaries.helm(), demo_namespace=NS
    )
    refs = {name: image.ref for name, image in local_node.images.items()}
    images = install.LocalImages(
        operator=refs["operator"],
        worker=refs["worker"],
        examples=refs["examples"],
        nats=refs["nats"],
        seaweedfs=refs["seaweedfs"],
    )
    try:
        installed = install.install(
            cluster,
            images=images,
            worker_namespaces=[NS],
            extra={
                "scheduler.leaseDuration": str(LEASE_SECONDS),
                "scheduler.renewDeadline": "7",
                "scheduler.statusInterval": "1",
            },
        )
    except kind.ClusterError as error:
        pytest.fail(f"{error}\n{cluster.diagnostics()}", pytrace=False)
    nats_port = local_node.forward(_cluster_ip(cluster, SYSTEM, f"{install.RELEASE}-nats"), 4222)
    s3_port = local_node.forward(_cluster_ip(cluster, SYSTEM, install.S3_SERVICE), install.S3_PORT)
    return Env(local_node, cluster, images, installed, nats_port, s3_port)


def _operator_pods(env: Env) -> list[dict[str, Any]]:
    pods = env.kubectl_json(
        "get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _shard_holders(env: Env) -> Counter[str]:
    leases = env.kubectl_json("get", "leases", "-n", SYSTEM)["items"]
    return Counter(
        lease["spec"].get("holderIdentity") or ""
        for lease in leases
        if "shard" in lease["metadata"]["name"]
    )


def test_operator_runs_two_replicas_under_its_own_service_account(env: Env) -> None:
    pods = _operator_pods(env)
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == f"{install.RELEASE}-operator"
        assert pod["status"]["phase"] == "Running"
    names = {p["metadata"]["name"] for p in pods}

    def split() -> bool:
        holders = _shard_holders(env)
        return set(holders) == names and all(count > 0 for count in holders.values())

    env.cluster.wait_until("both replicas to hold shard Leases", split, timeout=120)
    for pod in pods:
        logs = env.cluster.kubectl("logs", "-n", SYSTEM, pod["metadata"]["name"])
        assert "Traceback" not in logs, logs[-4000:]


def _uri_exists(env: Env, uri: str) -> int:
    assert uri.startswith("s3://"), uri
    bucket, _, key = uri[len("s3://") :].partition("/")
    return int(env.s3().stat_object(bucket, key).size or 0)


def _succeeded_runs(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in (job.get("status") or {}).get("runs") or [] if r.get("state") == "Succeeded"]


def test_examples_run_on_worker_pods_with_outputs_in_s3(env: Env) -> None:
    demo.seed_storage(
        endpoint=f"127.0.0.1:{env.s3_port}",
        access_key=env.installed.s3_access_key,
        secret_key=env.installed.s3_secret_key,
    )
    env.cluster.apply(
        install.examples_queue(
            namespace=NS,
            image=env.images.examples,
            access_key=env.installed.s3_access_key,
            secret_key=env.installed.s3_secret_key,
        ),
        *kind.demo_jobs(namespace=NS),
    )
    env.cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "kq/reports", "--timeout=120s")

    def workers_running() -> bool:
        pods = env.kubectl_json("get", "pods", "-n", NS, "-l", "kadence.io/queue=reports")["items"]
        return bool(pods) and all(p["status"].get("phase") == "Running" for p in pods)

    env.cluster.wait_until("the reports worker pods to run", workers_running, timeout=180)
    for job in ("heartbeat-report", "import-2025-01-31"):
        env.cluster.wait_until(
            f"a Succeeded run of {job} with its output",
            lambda job=job: any(r.get("output") for r in _succeeded_runs(env.job(job))),
            timeout=180,
        )
        for run in _succeeded_runs(env.job(job)):
            for output in run.get("output") or []:
                assert _uri_exists(env, output["uri"]) == output["size"], output
    # Every run was executed by a worker pod of the Queue's Deployment.
    pods = {
        p["metadata"]["name"]
        for p in env.kubectl_json("get", "pods", "-n", NS, "-l", "kadence.io/queue=reports")[
            "items"
        ]
    }
    workers = {r.worker for r in env.results() if r.job and r.job.name == "heartbeat-report"}
    assert workers
    assert all(any(pod in w for pod in pods) for w in workers), (workers, pods)


def _interval_job(name: str, *, every: str, task: str = "demo.echo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "queue": "reports",
            "task": task,
            "payload": {"job": name},
            "schedule": {"interval": every},
            **spec,
        },
    }


def _final_by_job(results: list[protocol.RunResult]) -> dict[str, list[protocol.RunResult]]:
    by_job: dict[str, list[protocol.RunResult]] = defaultdict(list)
    for result in results:
        if result.job is not None and result.state in FINAL:
            by_job[result.job.name].append(result)
    return by_job


def _assert_no_run_twice(results: list[protocol.RunResult]) -> None:
    """No run id has two final results, and no slot of a Job was run under two run ids."""
    finals = [r for r in results if r.state in FINAL and r.job is not None]
    twice = [k for k, n in Counter((r.run_id, r.attempt) for r in finals).items() if n > 1]
    assert not twice, twice
    succeeded = Counter(r.run_id for r in finals if r.state == "Succeeded")
    assert all(n == 1 for n in succeeded.values()), succeeded.most_common(3)
    slots: dict[tuple[str, datetime], set[str]] = defaultdict(set)
    for r in finals:
        if r.scheduled_at is not None and r.job is not None:
            slots[(r.job.name, r.scheduled_at)].add(r.run_id)
    doubled = {k: v for k, v in slots.items() if len(v) > 1}
    assert not doubled, doubled


FAILOVER_JOBS = [f"tick-{i}" for i in range(8)]


def test_killing_the_busier_operator_hands_its_jobs_over_within_the_lease(env: Env) -> None:
    env.cluster.apply(*(_interval_job(name, every="2s") for name in FAILOVER_JOBS))
    env.cluster.wait_until(
        "every tick Job to have run",
        lambda: all(_succeeded_runs(env.job(name)) for name in FAILOVER_JOBS),
        timeout=120,
    )
    holders = _shard_holders(env)
    busiest, shards = holders.most_common(1)[0]
    assert shards > 0
    killed_at = datetime.now(UTC)
    env.cluster.kubectl("delete", "pod", "-n", SYSTEM, busiest, "--grace-period=0", "--force")
    deadline = killed_at + timedelta(seconds=LEASE_SECONDS + 2 + 2 + 1)  # + interval + pickup
    time.sleep((deadline - datetime.now(UTC)).total_seconds() + 3)
    by_job = _final_by_job(env.results())
    late = {}
    for name in FAILOVER_JOBS:
        after = [r.started_at for r in by_job[name] if r.started_at and r.started_at > killed_at]
        if not after or min(after) > deadline:
            late[name] = min(after).isoformat() if after else "none"
    assert not late, f"killed {busiest} ({shards} shards) at {killed_at}; late: {late}"
    _assert_no_run_twice(env.results())
    env.cluster.wait_until(
        "the replacement operator pod",
        lambda: (
            len(_operator_pods(env)) == 2
            and all(p["status"].get("phase") == "Running" for p in _operator_pods(env))
        ),
        timeout=120,
    )


def test_a_worker_killed_mid_task_has_its_run_redelivered_and_recorded_once(env: Env) -> None:
    env.cluster.apply(
        {
            "apiVersion": "kadence.io/v1alpha1",
            "kind": "Job",
            "metadata": {"name": "long-task", "namespace": NS},
            "spec": {"queue": "reports", "task": "demo.sleep", "payload": 40, "timeout": "2m"},
        }
    )

    def running_on() -> str | None:
        for run in (env.job("long-task").get("status") or {}).get("active") or []:
            if run.get("worker"):  # set once a worker started the attempt
                return str(run["worker"])
        return None

    env.cluster.wait_until("long-task to run", lambda: running_on() is not None, timeout=120)
    worker = running_on()
    pods = env.kubectl_json("get", "pods", "-n", NS, "-l", "kadence.io/queue=reports")["items"]
    victim = next(p["metadata"]["name"] for p in pods if p["metadata"]["name"] in str(worker))
    env.cluster.kubectl("delete", "pod", "-n", NS, victim, "--grace-period=0", "--force")
    env.cluster.wait_until(
        "long-task to succeed after redelivery",
        lambda: bool(_succeeded_runs(env.job("long-task"))),
        timeout=240,
    )
    (run,) = _succeeded_runs(env.job("long-task"))
    assert run["attempts"] >= 2, run
    finals = [r for r in env.results() if r.run_id == run["runId"] and r.state in FINAL]
    assert [r.state for r in finals].count("Succeeded") == 1, finals
    assert all(victim not in r.worker for r in finals if r.state == "Succeeded")


def _burst_queue(env: Env) -> dict[str, Any]:
    queue = install.examples_queue(
        namespace=NS,
        image=env.images.examples,
        access_key=env.installed.s3_access_key,
        secret_key=env.installed.s3_secret_key,
    )
    queue["metadata"]["name"] = "burst"
    queue["spec"]["partitions"] = 2
    queue["spec"]["workers"]["concurrency"] = 2
    queue["spec"]["workers"]["autoscale"] = {
        "min": 1,
        "max": 3,
        "backlogPerWorker": 4,
        "cooldown": "20s",
    }
    return queue


def test_a_backlog_scales_the_workers_up_and_the_cooldown_back_down(env: Env) -> None:
    env.cluster.apply(_burst_queue(env))
    env.cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "kq/burst", "--timeout=120s")
    jobs = [f"burst-{i}" for i in range(24)]
    env.cluster.apply(
        *(
            {
                "apiVersion": "kadence.io/v1alpha1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"queue": "burst", "task": "demo.sleep", "payload": 6},
            }
            for name in jobs
        )
    )

    def ready_workers() -> int:
        deployment = env.cluster.get("deployment", "burst-workers", NS)
        return int(deployment["status"].get("readyReplicas") or 0)

    env.cluster.wait_until("three ready burst workers", lambda: ready_workers() == 3, timeout=180)
    env.cluster.wait_until(
        "every burst Job to succeed",
        lambda: all(_succeeded_runs(env.job(name)) for name in jobs),
        timeout=300,
    )
    workers = {r.worker for r in env.results() if r.job and r.job.name in jobs}
    assert len(workers) >= 2, f"the new pods took no work: {workers}"
    env.cluster.wait_until(
        "the burst workers to scale back to one",
        lambda: env.cluster.get("deployment", "burst-workers", NS)["spec"]["replicas"] == 1,
        timeout=180,
    )
    env.cluster.kubectl("delete", "-n", NS, "jobs.kadence.io", *jobs, "--wait=true")


UPGRADE_JOBS = [f"steady-{i}" for i in range(4)]


def test_helm_upgrade_to_a_new_operator_image_loses_and_doubles_no_slot(env: Env) -> None:
    env.cluster.apply(
        *(_interval_job(name, every="2s", catchUp={"policy": "All"}) for name in UPGRADE_JOBS)
    )
    env.cluster.wait_until(
        "every steady Job to have run",
        lambda: all(_succeeded_runs(env.job(name)) for name in UPGRADE_JOBS),
        timeout=120,
    )
    repository, _, tag = env.images.operator.rpartition(":")
    new_tag = f"{tag}-upgraded"
    env.local.tag_image(env.images.operator, f"{repository}:{new_tag}")
    before = datetime.now(UTC)
    env.cluster.helm(
        "upgrade",
        install.RELEASE,
        kind.CHART,
        *install.helm_args(
            images=env.images,
            worker_namespaces=[NS],
            extra={
                "image.operator.tag": new_tag,
                "scheduler.leaseDuration": str(LEASE_SECONDS),
                "scheduler.renewDeadline": "7",
                "scheduler.statusInterval": "1",
            },
        ),
    )
    images = {c["image"] for p in _operator_pods(env) for c in p["spec"]["containers"]}
    assert images == {f"{repository}:{new_tag}"}, images
    time.sleep(LEASE_SECONDS + 6)
    after = datetime.now(UTC)
    results = env.results()
    _assert_no_run_twice(results)
    by_job = _final_by_job(results)
    for name in UPGRADE_JOBS:
        slots = sorted(
            r.scheduled_at for r in by_job[name] if r.scheduled_at and before <= r.scheduled_at
        )
        slots = [s for s in slots if s <= after - timedelta(seconds=4)]
        assert slots, name
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
        assert all(gap == 2 for gap in gaps), (name, gaps)
        assert (slots[0] - before).total_seconds() <= 2, (name, slots[0], before)


def test_helm_uninstall_leaves_only_what_the_docs_say_stays(env: Env) -> None:
    env.cluster.kubectl(
        "delete",
        "-n",
        NS,
        "jobs.kadence.io,queues.kadence.io",
        "--all",
        "--wait=true",
        "--timeout=180s",
    )
    env.cluster.helm(
        "uninstall", install.RELEASE, "--namespace", SYSTEM, "--wait", "--timeout", "3m"
    )

    def leftovers() -> str:
        return env.cluster.kubectl(
            "get",
            "all,configmap,secret,serviceaccount,role,rolebinding,pvc",
            "-n",
            SYSTEM,
            "-l",
            f"app.kubernetes.io/instance={install.RELEASE}",
            "-o",
            "name",
        ).strip()

    # The pods go after the uninstall returns (their ReplicaSets' garbage collection).
    env.cluster.wait_until("the release's objects to be gone", lambda: not leftovers(), timeout=120)
    # What docs/helm.md says stays: the operator's Leases (labelled, expired once no replica
    # renews them), and the CRDs.
    leases = env.kubectl_json("get", "leases", "-n", SYSTEM)["items"]
    unlabelled = [
        x["metadata"]["name"]
        for x in leases
        if "kadence.io/lease" not in x["metadata"].get("labels", {})
    ]
    assert unlabelled == [], unlabelled
    cluster_scoped = env.cluster.kubectl("get", "clusterrole,clusterrolebinding", "-o", "name")
    assert f"{install.RELEASE}-operator" not in cluster_scoped
    worker_objects = env.cluster.kubectl(
        "get", "serviceaccount,rolebinding,deployment", "-n", NS, "-o", "name"
    )
    assert "kadence-worker" not in worker_objects
    assert "workers" not in worker_objects
    crds = env.cluster.kubectl("get", "crd", "-o", "name")
    assert "jobs.kadence.io" in crds  # Helm keeps CRDs
    assert "queues.kadence.io" in crds
