"""Results into status on real servers: outputs in S3 match the status, failures are visible,
and an operator killed between a result's arrival and its status write loses nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats
import pytest
from minio import Minio
from nats.js.errors import NotFoundError

from kadence import constants
from kadence.protocol import decode_results
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_devstack.s3 import S3Server
from tests.conftest import track

from .harness import (
    BIN,
    REPO,
    apply,
    condition,
    get,
    install_crds,
    kubectl,
    operator_env,
    start_operator,
    wait_for,
)

pytestmark = pytest.mark.integration
QUEUE = "results-q"


@pytest.fixture(scope="module")
def nats_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A NATS server of this module's own, so no other test's operator consumes its results."""
    server = NatsServer(tmp_path_factory.mktemp("nats-results"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> Minio:
    client = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    if not client.bucket_exists("kadence-outputs"):
        client.make_bucket("kadence-outputs")
    return client


def _env(kube: KubeControlPlane, nats: NatsServer, s3: S3Server, **extra: str) -> dict[str, str]:
    return operator_env(kube=kube, nats=nats, s3=s3, operator_id="op-results", extra=extra)


@pytest.fixture(scope="module")
def worker(
    kube: KubeControlPlane,
    nats_results: NatsServer,
    s3_server: S3Server,
    s3: Minio,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ManagedProcess]:
    install_crds(kube)
    apply(
        kube,
        {
            "apiVersion": "kadence.io/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": QUEUE, "namespace": "default"},
            "spec": {"partitions": 2, "delivery": {"ackWait": "10s"}},
        },
    )
    env = _env(kube, nats_results, s3_server, KADENCE_NAMESPACE="default")
    proc = ManagedProcess(
        name="kadence worker",
        argv=[
            str(BIN / "kadence"),
            "worker",
            "--queue",
            QUEUE,
            "--app",
            f"{REPO / 'examples' / 'app.py'}:app",
            "--concurrency",
            "4",
            "--metrics-port",
            "0",
        ],
        log_path=tmp_path_factory.mktemp("worker") / "worker.log",
        env=env,
    )
    try:
        track([proc])
        yield proc
    finally:
        proc.stop()


def _launch_worker(worker: ManagedProcess) -> None:
    if not worker.running:
        worker.launch()


@pytest.fixture
def operator(
    kube: KubeControlPlane,
    nats_results: NatsServer,
    s3_server: S3Server,
    worker: ManagedProcess,
    tmp_path: Path,
) -> Iterator[ManagedProcess]:
    proc = start_operator(tmp_path, _env(kube, nats_results, s3_server))
    try:
        track([proc])
        wait_for(
            lambda: (condition(get(kube, "queue", QUEUE), "Ready") or {}).get("status") == "True",
            what="Queue Ready",
        )
        _launch_worker(worker)
        yield proc
    finally:
        proc.stop()


def _last_result_state(nats_server: NatsServer, job_name: str) -> str | None:
    async def read() -> str | None:
        nc = await nats.connect(nats_server.url)
        try:
            msg = await nc.jetstream().get_last_msg(
                constants.RESULTS_STREAM, constants.results_subject("default", job_name)
            )
            # The last of its results: a worker may send several of one Job in one message.
            return decode_results(msg.data or b"").results[-1].state.value
        except NotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(read())


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"queue": QUEUE, **spec},
    }


def test_interval_job_outputs_resolve_to_s3_objects(
    operator: ManagedProcess, kube: KubeControlPlane, s3: Minio
) -> None:
    name = f"report-{uuid.uuid4().hex[:6]}"
    apply(
        kube,
        job(
            name,
            task="reports.build",
            payload={"report": "heartbeat", "format": "csv"},
            schedule={"interval": "2s"},
            historyLimits={"succeeded": 5, "failed": 5},
        ),
    )
    body = wait_for(
        lambda: (
            (b := get(kube, "kjob", name))
            and (b.get("status") or {}).get("counters", {}).get("succeeded", 0) >= 3
            and b
        ),
        timeout=60,
        what="3 succeeded runs",
    )
    succeeded = [r for r in body["status"]["runs"] if r["state"] == "Succeeded"]
    assert len(succeeded) >= 3
    for run in succeeded:
        assert run["output"], run
        assert run["finishedAt"] >= run["startedAt"]
        for output in run["output"]:
            uri = urlparse(output["uri"])
            assert uri.scheme == "s3"
            assert f"/default/{name}/{run['runId']}/" in uri.path
            stat = s3.stat_object(uri.netloc, uri.path.lstrip("/"))
            assert stat.size == output["size"]
            assert stat.etag == output["etag"]
    assert body["status"]["lastSuccessfulTime"]
    assert (condition(body, "LastRunSucceeded") or {}).get("status") == "True"
    kubectl(kube, "delete", "kjob", name)


def test_failing_task_shows_failed_with_error_and_event(
    operator: ManagedProcess, kube: KubeControlPlane
) -> None:
    name = f"fails-{uuid.uuid4().hex[:6]}"
    apply(
        kube,
        job(
            name,
            task="demo.fail",
            payload={"message": "disk on fire", "retryable": False},
            retryPolicy={"maxAttempts": 1},
        ),
    )
    body = wait_for(
        lambda: (
            (b := get(kube, "kjob", name))
            and any(r["state"] == "Failed" for r in (b.get("status") or {}).get("runs", []))
            and b
        ),
        timeout=60,
        what="a Failed run",
    )
    run = body["status"]["runs"][0]
    assert "disk on fire" in run["error"]
    cond = condition(body, "LastRunSucceeded")
    assert cond is not None
    assert cond["status"] == "False"
    assert "disk on fire" in cond["message"]
    events = wait_for(
        lambda: (
            (
                out := kubectl(
                    kube,
                    "get",
                    "events",
                    "--field-selector",
                    f"involvedObject.name={name}",
                    "-o",
                    "jsonpath={.items[*].reason}",
                )
            )
            and "RunFailed" in out
            and out
        ),
        what="RunFailed event",
    )
    assert "RunFailed" in events
    kubectl(kube, "delete", "kjob", name)


def _wait_reported_not_persisted(
    kube: KubeControlPlane, nats_server: NatsServer, name: str
) -> None:
    """Until the Job's dispatch is in its status (Pending/Running) and the worker has reported
    the run's success to the results stream."""
    wait_for(
        lambda: [
            r
            for r in (get(kube, "kjob", name).get("status") or {}).get("runs", [])
            if r["state"] in ("Pending", "Running")
        ],
        what="dispatch recorded, run not finished",
    )
    wait_for(
        lambda: _last_result_state(nats_server, name) == "Succeeded",
        timeout=30,
        what="the worker reported the run",
    )


def test_operator_killed_before_status_write_records_the_run_once(
    kube: KubeControlPlane,
    nats_results: NatsServer,
    s3_server: S3Server,
    worker: ManagedProcess,
    tmp_path: Path,
) -> None:
    name = f"crash-{uuid.uuid4().hex[:6]}"
    # A long status interval keeps the worker's result in the operator's writer, unpersisted.
    slow = start_operator(
        tmp_path,
        _env(
            kube,
            nats_results,
            s3_server,
            KADENCE_STATUS_INTERVAL="20",
            KADENCE_RESULTS_ACK_WAIT="23",
        ),
        name="slow",
    )
    track([slow])
    try:
        _launch_worker(worker)
        # The task takes 8 s, so its result arrives well after the dispatch was written (seen as
        # Pending/Running below) and then waits in the writer for the 20 s interval.
        apply(kube, job(name, task="demo.sleep", payload=8))
        _wait_reported_not_persisted(kube, nats_results, name)
        runs = get(kube, "kjob", name)["status"]["runs"]
        assert runs[0]["state"] in ("Pending", "Running")  # not persisted yet
    finally:
        slow.kill()  # SIGKILL: no chance to flush
    fresh = start_operator(tmp_path, _env(kube, nats_results, s3_server), name="fresh")
    track([fresh])
    try:
        body = wait_for(
            lambda: (
                (b := get(kube, "kjob", name))
                and b["status"]["runs"][0]["state"] == "Succeeded"
                and b
            ),
            timeout=60,
            what="the redelivered result folded",
        )
        assert body["status"]["counters"]["succeeded"] == 1
        assert len(body["status"]["runs"]) == 1
    finally:
        fresh.stop()
    kubectl(kube, "delete", "kjob", name)


def _results_redelivered(nats_server: NatsServer) -> int:
    async def read() -> int:
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().consumer_info(
                constants.RESULTS_STREAM, constants.RESULTS_CONSUMER
            )
            return int(info.num_redelivered or 0)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_results_of_a_dead_operator_come_back_within_the_ack_wait(
    kube: KubeControlPlane,
    nats_results: NatsServer,
    s3_server: S3Server,
    worker: ManagedProcess,
    tmp_path: Path,
) -> None:
    """#29: a result the killed operator had taken was missing from status for ~60 s (the
    results consumer's ack wait). A result waiting for its status write longer than the ack
    wait is kept claimed (in-progress acks: not redelivered), and once its operator dies it is
    folded by the next one within the ack wait (6 s here; 15 s by default)."""
    name = f"dead-{uuid.uuid4().hex[:6]}"
    # A status interval longer than the ack wait keeps the result in the writer, unpersisted,
    # for longer than the ack wait.
    slow = start_operator(
        tmp_path,
        _env(
            kube,
            nats_results,
            s3_server,
            KADENCE_STATUS_INTERVAL="20",
            KADENCE_RESULTS_ACK_WAIT="6",
        ),
        name="slow-claim",
    )
    track([slow])
    try:
        _launch_worker(worker)
        redelivered = _results_redelivered(nats_results)
        apply(kube, job(name, task="demo.sleep", payload=2))
        _wait_reported_not_persisted(kube, nats_results, name)
        time.sleep(8)  # longer than the ack wait: claimed all the while by in-progress acks
        assert get(kube, "kjob", name)["status"]["runs"][0]["state"] in ("Pending", "Running")
        assert _results_redelivered(nats_results) == redelivered
    finally:
        slow.kill()  # SIGKILL: no chance to flush
    killed = time.monotonic()
    fresh = start_operator(
        tmp_path,
        _env(kube, nats_results, s3_server, KADENCE_RESULTS_ACK_WAIT="6"),
        name="fresh-claim",
    )
    track([fresh])
    try:
        body = wait_for(
            lambda: (
                (b := get(kube, "kjob", name))
                and b["status"]["runs"][0]["state"] == "Succeeded"
                and b
            ),
            timeout=30,
            what="the dead operator's result folded",
        )
        assert time.monotonic() - killed < 6 + 5 + 10  # ack wait, status interval, start
        assert body["status"]["counters"]["succeeded"] == 1
        assert body["status"]["counters"]["dispatched"] == 1
    finally:
        fresh.stop()
    kubectl(kube, "delete", "kjob", name)


def test_kadence_runs_prints_outputs(kube: KubeControlPlane, operator: ManagedProcess) -> None:
    import subprocess

    name = f"runs-{uuid.uuid4().hex[:6]}"
    apply(kube, job(name, task="demo.echo", payload={"x": 1}))
    wait_for(
        lambda: any(
            r["state"] == "Succeeded"
            for r in (get(kube, "kjob", name).get("status") or {}).get("runs", [])
        ),
        timeout=40,
        what="a succeeded run",
    )
    out = subprocess.run(
        [str(BIN / "kadence"), "runs", name, "-n", "default", "--json"],
        env={"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert '"state": "Succeeded"' in out.stdout
    assert "s3://kadence-outputs/default/" in out.stdout
    missing = subprocess.run(
        [str(BIN / "kadence"), "runs", "no-such-job", "-n", "default"],
        env={"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert "Job default/no-such-job not found" in missing.stderr
    kubectl(kube, "delete", "kjob", name)
