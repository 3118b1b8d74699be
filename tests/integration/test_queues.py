"""Queue reconciliation (issue #4) against a real nats-server and a real control plane.

Each test runs its own ``kadence-operator`` process — several of them need to stop it or point it
at a NATS of their own — and deletes its Queues before stopping it. Operators watch the whole
cluster, so no two run at the same time here.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from kadence import constants
from kadence.protocol import JobRef, RunRequest, RunState, decode_result, encode
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_operator.api import QueueSpec
from kadence_operator.queues import deadletter, streams
from tests.conftest import track
from tests.data.invalid_manifests import INVALID_MANIFESTS

from .harness import (
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

NS = "default"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def queue(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def ready(kube: KubeControlPlane, name: str) -> dict[str, Any] | None:
    return condition(get(kube, "queue", name), "Ready")


def wait_ready(kube: KubeControlPlane, name: str, *, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (c := ready(kube, name)) and c["status"] == "True" and c,
        timeout=timeout,
        what=f"Queue {name} Ready=True",
    )


def wait_not_ready(
    kube: KubeControlPlane, name: str, reason: str, *, timeout: float = 30
) -> dict[str, Any]:
    return wait_for(
        lambda: (c := ready(kube, name)) and c["status"] == "False" and c["reason"] == reason and c,
        timeout=timeout,
        what=f"Queue {name} Ready=False/{reason}",
    )


@contextlib.contextmanager
def running_operator(
    kube: KubeControlPlane, env: dict[str, str], workdir: Path, name: str
) -> Iterator[ManagedProcess]:
    install_crds(kube)
    proc = start_operator(workdir, env, name=name)
    track([proc])
    try:
        yield proc
    finally:
        proc.stop()


def delete_queues(kube: KubeControlPlane, *names: str) -> None:
    """Delete Queues while their operator still runs (it holds their finalizer)."""
    for name in names:
        with contextlib.suppress(RuntimeError):
            kubectl(kube, "delete", "queue", name, "--ignore-not-found", "--timeout=30s")


async def _connect(servers: list[str]) -> Any:
    return await nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=3)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _stream(servers: list[str], stream: str) -> Any:
    nc = await _connect(servers)
    try:
        try:
            return await nc.jetstream().stream_info(stream)
        except NotFoundError:
            return None
    finally:
        await nc.close()


async def _add_single_replica_results_stream(servers: list[str]) -> None:
    """What an operator before replicated results left on a cluster: KADENCE_RESULTS as R1."""
    nc = await _connect(servers)
    try:
        await nc.jetstream().add_stream(
            name=constants.RESULTS_STREAM,
            subjects=[constants.RESULTS_SUBJECTS],
            num_replicas=1,
        )
    finally:
        await nc.close()


async def _publish(
    servers: list[str], name: str, bodies: list[bytes], partitions: int
) -> list[int]:
    """Publish with JetStream acks; returns the stream sequences."""
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        sequences = []
        for i, body in enumerate(bodies):
            ack = await js.publish(
                constants.subject(NS, name, i % partitions),
                body,
                headers={constants.MSG_ID_HEADER: f"{name}-{uuid.uuid4().hex}"},
            )
            sequences.append(ack.seq)
        return sequences
    finally:
        await nc.close()


# --------------------------------------------------------------------------------------------
# 0. applying an unchanged spec changes nothing (else every drift check would post DriftRestored)
# --------------------------------------------------------------------------------------------

SPECS = [
    pytest.param({}, id="defaults"),
    pytest.param(
        {
            "partitions": 3,
            "storage": "memory",
            "retention": {"maxAge": "1h", "maxMessages": 1000, "maxBytes": 10_000_000},
            "delivery": {"ackWait": "20s", "maxDeliver": 4, "backoff": ["1s", "5s"]},
            "deadLetter": {"maxAge": "24h"},
        },
        id="everything-set",
    ),
    pytest.param(
        {"delivery": {"maxAckPending": 10}, "retention": {"discard": "new", "maxMessages": 5}},
        id="flow-control-discard-new",
    ),
    pytest.param({"deadLetter": {"enabled": False}}, id="no-dlq"),
]


async def _apply_twice(servers: list[str], name: str, raw: dict[str, Any]) -> Any:
    spec = QueueSpec.model_validate(raw)
    ref = streams.QueueRef(NS, name)
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        try:
            first = await streams.apply(js, ref, spec, duplicate_window=60)
            second = await streams.apply(js, ref, spec, duplicate_window=60)
            info = await js.stream_info(ref.stream)
            return first, second, info
        finally:
            await streams.delete(js, ref)
    finally:
        await nc.close()


@pytest.mark.parametrize("raw", SPECS)
def test_apply_is_idempotent(nats_server: NatsServer, raw: dict[str, Any]) -> None:
    first, second, info = run(_apply_twice(nats_server.urls, unique("idem"), raw))
    assert any(c.startswith("created stream KADENCE_default_") for c in first)
    assert second == []
    partitions = str(raw.get("partitions", 1))
    assert (info.config.metadata or {})[constants.PARTITIONS_METADATA_KEY] == partitions


# --------------------------------------------------------------------------------------------
# 1. replicas: 3 on a 3-node cluster survives the loss of a node
# --------------------------------------------------------------------------------------------


async def _drain(servers: list[str], name: str, partitions: int, expected: int) -> list[bytes]:
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        stream = constants.stream_name(NS, name)
        received: list[bytes] = []
        deadline = time.monotonic() + 30
        for p in range(partitions):
            sub = await js.pull_subscribe_bind(constants.consumer_name(p), stream=stream)
            while len(received) < expected and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(50, timeout=2)
                except TimeoutError:
                    break
                for msg in msgs:
                    received.append(msg.data)
                    await msg.ack_sync()
        return received
    finally:
        await nc.close()


def test_replicated_queue_survives_a_node_loss(kube: KubeControlPlane, tmp_path: Path) -> None:
    cluster = NatsServer(tmp_path / "nats", cluster_size=3)
    try:
        cluster.start()
        track([n.process for n in cluster.nodes])
        cluster.wait_healthy()
        env = operator_env(kube=kube, nats=cluster, s3=None, operator_id=unique("op-r3"))
        assert env["KADENCE_NATS_URL"].count(",") == 2  # every node, comma-separated
        name = unique("r3")
        stream = constants.stream_name(NS, name)
        run(_add_single_replica_results_stream(cluster.urls))
        with running_operator(kube, env, tmp_path, "operator-r3"):
            try:
                # The operator's own streams are replicated too: losing a node loses no result
                # and no advisory, and the R1 results stream it found was raised in place.
                for own in (constants.RESULTS_STREAM, constants.ADVISORIES_STREAM):
                    assert run(_stream(cluster.urls, own)).config.num_replicas == 3, own
                apply(kube, queue(name, replicas=3, partitions=2))
                assert "3 replicas" in wait_ready(kube, name)["message"]
                info = run(_stream(cluster.urls, stream))
                assert info.config.num_replicas == 3
                assert info.cluster is not None
                assert info.cluster.leader
                assert len(info.cluster.replicas or []) == 2

                bodies = [f"message-{i}".encode() for i in range(40)]
                sequences = run(_publish(cluster.urls, name, bodies, partitions=2))
                assert len(set(sequences)) == len(bodies)

                # Kill the stream's leader: the hardest node to lose.
                leader = next(
                    i for i, n in enumerate(cluster.nodes) if n.name == info.cluster.leader
                )
                killed_at = datetime.now(UTC).replace(microsecond=0)
                cluster.nodes[leader].process.kill()
                survivors = [n.url for i, n in enumerate(cluster.nodes) if i != leader]

                # The status keeps refreshing from the two remaining nodes, and Ready never drops.
                deadline = time.monotonic() + 25
                fresh = False
                while time.monotonic() < deadline and not fresh:
                    body = get(kube, "queue", name)
                    now = condition(body, "Ready") or {}
                    assert now.get("status") == "True", f"Ready dropped after the kill: {now}"
                    status = body.get("status") or {}
                    synced = status.get("lastSyncTime")
                    fresh = bool(
                        synced
                        and datetime.fromisoformat(synced.replace("Z", "+00:00")) > killed_at
                        and status.get("messages") == len(bodies)
                    )
                    time.sleep(0.5)
                assert fresh, "no status refresh after the node was killed"
                after = run(_stream(survivors, stream))
                assert after.cluster.leader != cluster.nodes[leader].name

                # Every acknowledged message is still there.
                received = run(_drain(survivors, name, 2, len(bodies)))
                assert sorted(received) == sorted(bodies)
            finally:
                delete_queues(kube, name)
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# 2. dead letters: max deliveries (moved by the operator) and terminated by a worker
# --------------------------------------------------------------------------------------------


def _nak_request(name: str) -> RunRequest:
    """The run request that is nak'ed to maxDeliver: a scheduled run of a Job."""
    return RunRequest(
        run_id=f"{name}-run",
        task="never.done",
        job=JobRef(namespace=NS, name=f"{name}-job", uid="uid-1"),
        scheduled_at=datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
        trigger="Schedule",
    )


async def _exhaust_and_terminate(servers: list[str], name: str) -> dict[str, Any]:
    """While no operator runs: one run request nak'ed to maxDeliver (2), one message
    dead-lettered by a "worker" (copied to the DLQ with the headers, then terminated)."""
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        stream = constants.stream_name(NS, name)
        subject = constants.subject(NS, name, 0)
        nak_body = encode(_nak_request(name))
        nak_ack = await js.publish(
            subject, nak_body, headers={constants.MSG_ID_HEADER: "a", "X-Trace": "t-1"}
        )
        sub = await js.pull_subscribe_bind(constants.consumer_name(0), stream=stream)
        deliveries = 0
        for _ in range(4):
            try:
                msgs = await sub.fetch(1, timeout=1)
            except TimeoutError:
                continue  # a pull after the last delivery lets JetStream notice maxDeliver
            for msg in msgs:
                assert msg.data == nak_body
                deliveries += 1
                await msg.nak()
        assert deliveries == 2

        # JetStream's advisory, kept by the operator's stream while the operator is down.
        advisory_subject = (
            f"{constants.MAX_DELIVERIES_ADVISORY}.{stream}.{constants.consumer_name(0)}"
        )
        advisory = None
        for _ in range(40):
            try:
                advisory = await js.get_last_msg(constants.ADVISORIES_STREAM, advisory_subject)
                break
            except NotFoundError:
                await asyncio.sleep(0.25)
        assert advisory is not None, f"no advisory on {advisory_subject}"
        payload = json.loads(advisory.data or b"{}")
        assert payload["type"] == "io.nats.jetstream.advisory.v1.max_deliver"
        assert payload["stream"] == stream
        assert payload["consumer"] == constants.consumer_name(0)
        assert payload["stream_seq"] == nak_ack.seq
        assert payload["deliveries"] == 2

        # A worker rejecting a message as poison: copy with the DLQ headers, then term().
        term_ack = await js.publish(subject, b"poison-term", headers={constants.MSG_ID_HEADER: "b"})
        (msg,) = await sub.fetch(1, timeout=5)
        meta = msg.metadata
        await js.publish(
            constants.dlq_subject(NS, name),
            msg.data,
            headers={
                constants.DLQ_REASON_HEADER: "NonRetryable",
                constants.DLQ_SUBJECT_HEADER: msg.subject,
                constants.DLQ_DELIVERIES_HEADER: str(meta.num_delivered),
                constants.DLQ_ERROR_HEADER: "ValueError: not a report",
                constants.DLQ_STREAM_SEQ_HEADER: str(meta.sequence.stream),
                constants.MSG_ID_HEADER: f"dlq:{stream}:{meta.sequence.stream}",
            },
        )
        await msg.term()
        # The nak'ed message stays in the work stream until the operator moves it.
        assert (await js.get_msg(stream, nak_ack.seq)).data == nak_body
        return {"nak_seq": nak_ack.seq, "term_seq": term_ack.seq}
    finally:
        await nc.close()


async def _last_result(servers: list[str], subject: str) -> bytes:
    nc = await _connect(servers)
    try:
        message = await nc.jetstream().get_last_msg(constants.RESULTS_STREAM, subject)
        return message.data or b""
    finally:
        await nc.close()


async def _dead_letters(servers: list[str], name: str) -> list[Any]:
    nc = await _connect(servers)
    try:
        js = nc.jetstream()
        dlq = constants.dlq_stream_name(NS, name)
        info = await js.stream_info(dlq)
        return [
            await js.get_msg(dlq, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
            if info.state.messages
        ]
    finally:
        await nc.close()


def test_dead_letters_across_an_operator_restart(
    kube: KubeControlPlane, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = operator_env(kube=kube, nats=nats_server, s3=None, operator_id=unique("op-dlq"))
    name = unique("dlq")
    stream = constants.stream_name(NS, name)
    with running_operator(kube, env, tmp_path, "operator-dlq-1"):
        apply(kube, queue(name, delivery={"ackWait": "5s", "maxDeliver": 2}))
        wait_ready(kube, name)
    # The operator is down while JetStream gives up on one message and a worker on another.
    seqs = run(_exhaust_and_terminate(nats_server.urls, name))
    with running_operator(kube, env, tmp_path, "operator-dlq-2"):
        try:
            letters = wait_for(
                lambda: (d := run(_dead_letters(nats_server.urls, name))) and len(d) == 2 and d,
                timeout=30,
                what="both messages in the DLQ",
            )
            by_body = {m.data: m for m in letters}
            moved = by_body[encode(_nak_request(name))].headers or {}
            assert moved[constants.DLQ_REASON_HEADER] == deadletter.MAX_DELIVERIES_REASON
            assert moved[constants.DLQ_SUBJECT_HEADER] == constants.subject(NS, name, 0)
            assert moved[constants.DLQ_DELIVERIES_HEADER] == "2"
            assert moved[constants.DLQ_STREAM_SEQ_HEADER] == str(seqs["nak_seq"])
            assert "maxDeliver" in moved[constants.DLQ_ERROR_HEADER]
            assert moved[constants.MSG_ID_HEADER] == f"dlq:{stream}:{seqs['nak_seq']}"
            assert moved["X-Trace"] == "t-1"  # the original's own headers travel along
            termed = by_body[b"poison-term"].headers or {}
            assert termed[constants.DLQ_REASON_HEADER] == "NonRetryable"
            assert termed[constants.DLQ_STREAM_SEQ_HEADER] == str(seqs["term_seq"])

            # No worker reports the run JetStream gave up on: the operator does, so its Job
            # does not show it active for ever.
            request = _nak_request(name)
            assert request.job is not None
            report = decode_result(
                run(
                    _last_result(
                        nats_server.urls,
                        constants.results_subject(NS, request.job.name),
                    )
                )
            )
            assert (report.run_id, report.state, report.attempt) == (
                request.run_id,
                RunState.DEAD_LETTERED,
                2,
            )
            assert (report.trigger, report.scheduled_at) == ("Schedule", request.scheduled_at)
            assert report.error is not None
            assert report.error.type == "MaxDeliveries"

            # The work stream is empty, and the status counts both.
            wait_for(
                lambda: run(_stream(nats_server.urls, stream)).state.messages == 0,
                what="the moved message deleted from the work stream",
            )
            status = wait_for(
                lambda: (
                    (s := get(kube, "queue", name).get("status") or {})
                    and s.get("deadLettered") == 2
                    and s.get("messages") == 0
                    and s
                ),
                timeout=20,
                what="status.deadLettered == 2",
            )
            assert (condition({"status": status}, "Ready") or {}).get("status") == "True"
        finally:
            delete_queues(kube, name)


# --------------------------------------------------------------------------------------------
# 3. the worker Deployment: created, scaled with the backlog, garbage-collected with the Queue
# --------------------------------------------------------------------------------------------

WORKER_SECRET = "kadence-worker-creds"


def deployment(kube: KubeControlPlane, name: str) -> dict[str, Any] | None:
    out = kubectl(
        kube, "get", "deployment", f"{name}-workers", "-n", NS, "-o", "json", "--ignore-not-found"
    )
    return json.loads(out) if out.strip() else None


def replicas_become(kube: KubeControlPlane, name: str, count: int, timeout: float = 20) -> Any:
    return wait_for(
        lambda: (d := deployment(kube, name)) and d["spec"]["replicas"] == count and d,
        timeout=timeout,
        what=f"{name}-workers at {count} replicas",
    )


async def _purge(servers: list[str], stream: str) -> None:
    nc = await _connect(servers)
    try:
        await nc.jetstream().purge_stream(stream)
    finally:
        await nc.close()


def test_worker_deployment_scales_with_backlog_and_is_collected(
    kube: KubeControlPlane, nats_server: NatsServer, tmp_path: Path
) -> None:
    access_key, secret_key = f"AK{uuid.uuid4().hex}", f"SK{uuid.uuid4().hex}"
    env = operator_env(
        kube=kube,
        nats=nats_server,
        s3=None,
        operator_id=unique("op-workers"),
        extra={
            "KADENCE_WORKER_SECRET": WORKER_SECRET,
            "KADENCE_S3_ENDPOINT": "127.0.0.1:9",
            "KADENCE_S3_SECURE": "false",
            "KADENCE_S3_ACCESS_KEY": access_key,
            "KADENCE_S3_SECRET_KEY": secret_key,
        },
    )
    name = unique("scaled")
    stream = constants.stream_name(NS, name)
    spec = {
        "partitions": 2,
        "workers": {
            "image": "ghcr.io/example/worker:1.0",
            "app": "app:app",
            "autoscale": {"min": 1, "max": 4, "backlogPerWorker": 5, "cooldown": "2s"},
        },
    }
    with running_operator(kube, env, tmp_path, "operator-workers") as proc:
        try:
            apply(kube, queue(name, **spec))
            wait_ready(kube, name)
            first = replicas_become(kube, name, 1)
            owner = get(kube, "queue", name)
            (ref,) = first["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"]) == (
                "Queue",
                name,
                owner["metadata"]["uid"],
            )
            assert ref["controller"] is True
            (worker,) = first["spec"]["template"]["spec"]["containers"]
            assert worker["envFrom"] == [{"secretRef": {"name": WORKER_SECRET, "optional": True}}]
            env_vars = {e["name"]: e.get("value") for e in worker["env"]}
            assert env_vars["KADENCE_NATS_URL"] == nats_server.url
            assert env_vars["KADENCE_S3_ENDPOINT"] == "127.0.0.1:9"

            run(_publish(nats_server.urls, name, [b"x"] * 12, partitions=2))
            replicas_become(kube, name, 3)  # ceil(12 / 5)
            run(_publish(nats_server.urls, name, [b"y"] * 20, partitions=2))
            scaled = replicas_become(kube, name, 4)  # ceil(32 / 5) = 7, clamped to max
            stamp = scaled["metadata"]["annotations"]["kadence.io/scaled-at"]
            wait_for(
                lambda: (
                    (s := get(kube, "queue", name).get("status") or {})
                    and s.get("pending") == 32
                    and (s.get("workers") or {}).get("desired") == 4
                ),
                what="status.pending and status.workers",
            )

            run(_purge(nats_server.urls, stream))
            purged = time.monotonic()
            down = replicas_become(kube, name, 1, timeout=20)  # back to min after the cooldown
            assert down["metadata"]["annotations"]["kadence.io/scaled-at"] > stamp
            assert time.monotonic() - purged < 15

            # No credential value anywhere the operator writes.
            written = [
                json.dumps(down),
                json.dumps(get(kube, "queue", name)),
                kubectl(kube, "get", "events", "-n", NS, "-o", "json"),
                proc.log_tail(5000),
            ]
            for text in written:
                assert access_key not in text
                assert secret_key not in text

            # Deleting the Queue takes the Deployment with it (kube-controller-manager's GC).
            kubectl(kube, "delete", "queue", name, "--timeout=30s")
            wait_for(
                lambda: deployment(kube, name) is None,
                timeout=30,
                what="the worker Deployment garbage-collected",
            )
        finally:
            delete_queues(kube, name)


def test_worker_deployment_in_another_namespace_gets_qualified_endpoints(
    kube: KubeControlPlane, nats_server: NatsServer, tmp_path: Path
) -> None:
    """A short S3 host is the operator's Service (namespace ``default`` here, the release
    namespace under the chart); workers in another namespace get it qualified with that one."""
    team = unique("team")
    kubectl(kube, "create", "namespace", team)
    env = operator_env(
        kube=kube,
        nats=nats_server,
        s3=None,
        operator_id=unique("op-qualify"),
        extra={"KADENCE_S3_ENDPOINT": "seaweedfs:8333", "KADENCE_S3_SECURE": "false"},
    )
    name = unique("elsewhere")
    body = queue(name, workers={"image": "ghcr.io/example/worker:1.0", "app": "app:app"})
    body["metadata"]["namespace"] = team
    try:
        with running_operator(kube, env, tmp_path, "operator-qualify"):
            try:
                apply(kube, body)
                created = wait_for(
                    lambda: json.loads(
                        kubectl(kube, "get", "deployment", "-n", team, "-o", "json")
                    )["items"],
                    what=f"the worker Deployment in {team}",
                )
                (worker,) = created[0]["spec"]["template"]["spec"]["containers"]
                env_vars = {e["name"]: e.get("value") for e in worker["env"]}
                assert env_vars["KADENCE_S3_ENDPOINT"] == "seaweedfs.default.svc:8333"
                assert env_vars["KADENCE_NATS_URL"] == nats_server.url  # an IP: as it is
                assert env_vars["KADENCE_NAMESPACE"] == team
            finally:
                with contextlib.suppress(RuntimeError):
                    kubectl(kube, "delete", "queue", name, "-n", team, "--timeout=30s")
    finally:
        with contextlib.suppress(RuntimeError):
            kubectl(kube, "delete", "namespace", team, "--wait=false")


# --------------------------------------------------------------------------------------------
# 4. invalid or impossible specs: Ready=False with a message; other Queues keep working
# --------------------------------------------------------------------------------------------


def events_about(kube: KubeControlPlane, name: str) -> list[str]:
    """Reasons of the Events about object ``name``."""
    items = json.loads(kubectl(kube, "get", "events", "-n", NS, "-o", "json"))["items"]
    return [e["reason"] for e in items if e["involvedObject"]["name"] == name]


def test_invalid_and_impossible_queues_are_reported(
    kube: KubeControlPlane, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = operator_env(kube=kube, nats=nats_server, s3=None, operator_id=unique("op-invalid"))
    semantic = [m for m in INVALID_MANIFESTS if m.manifest["kind"] == "Queue"]
    semantic = [m for m in semantic if m.rejection == "semantic"]
    assert semantic
    bad: dict[str, str] = {}  # name -> field the message must name
    manifests = []
    for case in semantic:
        manifest = copy.deepcopy(case.manifest)
        manifest["metadata"] = {"name": unique("semantic"), "namespace": NS}
        manifests.append(manifest)
        bad[manifest["metadata"]["name"]] = case.field
    three_replicas = unique("r3-single")  # a single nats-server cannot keep 3 replicas
    refused = unique("refused")  # the API server refuses requests above limits
    good = unique("good")
    with running_operator(kube, env, tmp_path, "operator-invalid") as proc:
        try:
            apply(kube, *manifests, queue(three_replicas, replicas=3))
            apply(
                kube,
                queue(
                    refused,
                    workers={
                        "image": "ghcr.io/example/worker:1.0",
                        "app": "app:app",
                        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                    },
                ),
            )
            for name, field in bad.items():
                message = wait_not_ready(kube, name, "InvalidSpec")["message"]
                assert field in message
            rejected = wait_not_ready(kube, three_replicas, "StreamRejected")["message"]
            assert "spec.replicas" in rejected
            assert "non-clustered" in rejected
            workers = wait_not_ready(kube, refused, "InvalidSpec")["message"]
            assert "spec.workers" in workers
            assert "cpu limit" in workers
            wait_for(
                lambda: "StreamRejected" in events_about(kube, three_replicas),
                what="a StreamRejected Warning Event",
            )

            # A valid Queue created afterwards is served as usual ...
            apply(kube, queue(good, partitions=2))
            wait_ready(kube, good)
            assert run(_stream(nats_server.urls, constants.stream_name(NS, good))) is not None
            # ... and the refused ones stay refused, without a hot loop of Events.
            time.sleep(3)
            assert (ready(kube, three_replicas) or {}).get("reason") == "StreamRejected"
            assert 1 <= events_about(kube, three_replicas).count("StreamRejected") <= 2
            assert proc.running
        finally:
            delete_queues(kube, *bad, three_replicas, refused, good)


# --------------------------------------------------------------------------------------------
# 5. NATS unreachable: NatsUnavailable, retried with backoff, Ready again once NATS is back
# --------------------------------------------------------------------------------------------


def test_nats_outage_is_reported_and_recovered(kube: KubeControlPlane, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    try:
        server.start()
        track([n.process for n in server.nodes])
        env = operator_env(kube=kube, nats=server, s3=None, operator_id=unique("op-outage"))
        before, during = unique("before"), unique("during")
        with running_operator(kube, env, tmp_path, "operator-outage") as proc:
            try:
                apply(kube, queue(before))
                wait_ready(kube, before)
                server.nodes[0].process.stop()

                apply(kube, queue(during))
                unavailable = wait_not_ready(kube, during, "NatsUnavailable", timeout=20)
                assert "not reachable" in unavailable["message"]
                # The Queue that was Ready rides out short blips (20 s), then reports the outage.
                wait_not_ready(kube, before, "NatsUnavailable", timeout=40)

                server.restart_node(0)
                wait_ready(kube, during, timeout=40)
                wait_ready(kube, before, timeout=20)
                for name in (before, during):
                    stream = constants.stream_name(NS, name)
                    assert run(_stream(server.urls, stream)) is not None
                assert proc.running
            finally:
                delete_queues(kube, before, during)
    finally:
        server.stop()
