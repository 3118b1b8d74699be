"""The operator as a real process against real kube-apiserver and nats-server."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from kadence import constants
from kadence.protocol import decode_run
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from tests.conftest import track

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


@pytest.fixture(scope="module")
def operator(
    kube: KubeControlPlane, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    install_crds(kube)
    env = operator_env(kube=kube, nats=nats_server, s3=None, operator_id="op-test")
    proc = start_operator(tmp_path_factory.mktemp("operator"), env)
    try:
        track([proc])
        yield proc
    finally:
        proc.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def queue(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


async def _stream_state(url: str, stream: str) -> dict[str, Any] | None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return None
        consumers = {c.name: c.config for c in await js.consumers_info(stream)}
        return {"info": info, "consumers": consumers}
    finally:
        await nc.close()


def stream_state(nats_server: NatsServer, stream: str) -> dict[str, Any] | None:
    return asyncio.run(_stream_state(nats_server.url, stream))


async def _delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def _read_runs(url: str, stream: str) -> list[Any]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        runs = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            runs.append(decode_run(msg.data or b""))
        return runs
    finally:
        await nc.close()


def test_queue_lifecycle(
    operator: ManagedProcess, kube: KubeControlPlane, nats_server: NatsServer
) -> None:
    name = unique("lifecycle")
    stream = constants.stream_name("default", name)
    apply(kube, queue(name, partitions=3, delivery={"ackWait": "20s", "maxDeliver": 4}))
    state = wait_for(
        lambda: (s := stream_state(nats_server, stream)) and len(s["consumers"]) == 3 and s,
        what="stream and 3 consumers created",
    )
    assert state["info"].config.subjects == [f"kadence.default.{name}.*"]
    assert sorted(state["consumers"]) == ["partition-0", "partition-1", "partition-2"]
    assert state["consumers"]["partition-1"].ack_wait == 20
    assert state["consumers"]["partition-1"].max_deliver == 4
    body = wait_for(
        lambda: (
            (b := get(kube, "queue", name))
            and (condition(b, "Ready") or {}).get("status") == "True"
            and b
        ),
        what="Queue Ready",
    )
    assert body["status"]["stream"] == stream
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]

    # Update in place.
    apply(kube, queue(name, partitions=3, delivery={"ackWait": "45s", "maxDeliver": 7}))
    wait_for(
        lambda: (
            (s := stream_state(nats_server, stream))
            and s["consumers"]["partition-2"].max_deliver == 7
            and s["consumers"]["partition-2"].ack_wait == 45
        ),
        what="consumers updated",
    )

    # Drift: a stream deleted behind the operator's back comes back.
    asyncio.run(_delete_stream(nats_server.url, stream))
    wait_for(lambda: stream_state(nats_server, stream), timeout=20, what="stream restored")

    # The schema refuses a storage change outright (a CEL transition rule) ...
    with pytest.raises(RuntimeError, match=r"spec\.storage"):
        apply(kube, queue(name, partitions=3, storage="memory"))
    # ... and the operator refuses fewer partitions, deleting nothing.
    apply(kube, queue(name, partitions=2))
    refused = wait_for(
        lambda: (
            (c := condition(get(kube, "queue", name), "Ready")) and c["status"] == "False" and c
        ),
        what="ImmutableChange",
    )
    assert refused["reason"] == "ImmutableChange"
    assert "spec.partitions" in refused["message"]
    assert stream_state(nats_server, stream) is not None

    kubectl(kube, "delete", "queue", name, "--wait=true", "--timeout=30s")
    wait_for(lambda: stream_state(nats_server, stream) is None, what="stream deleted")


def test_retain_policy_keeps_the_stream(
    operator: ManagedProcess, kube: KubeControlPlane, nats_server: NatsServer
) -> None:
    name = unique("retain")
    stream = constants.stream_name("default", name)
    apply(kube, queue(name, deletionPolicy="Retain"))
    wait_for(lambda: stream_state(nats_server, stream), what="stream created")
    kubectl(kube, "delete", "queue", name, "--wait=true", "--timeout=30s")
    assert stream_state(nats_server, stream) is not None
    asyncio.run(_delete_stream(nats_server.url, stream))


def test_interval_job_dispatches_runs_and_trigger_adds_one(
    operator: ManagedProcess, kube: KubeControlPlane, nats_server: NatsServer
) -> None:
    qname, jname = unique("q"), unique("every2s")
    stream = constants.stream_name("default", qname)
    apply(kube, queue(qname, partitions=2))
    apply(
        kube,
        job(jname, queue=qname, task="demo.echo", payload={"n": 1}, schedule={"interval": "2s"}),
    )
    body = wait_for(
        lambda: (
            (b := get(kube, "kjob", jname))
            and (b.get("status") or {}).get("counters", {}).get("dispatched", 0) >= 3
            and b
        ),
        timeout=30,
        what="3 dispatched runs",
    )
    assert (condition(body, "Ready") or {}).get("status") == "True"
    assert body["status"]["nextRunTime"]
    runs = asyncio.run(_read_runs(nats_server.url, stream))
    mine = [r for r in runs if r.job and r.job.name == jname]
    assert len(mine) >= 3
    assert len({r.run_id for r in mine}) == len(mine)  # no slot twice
    slots = sorted(r.scheduled_at for r in mine if r.scheduled_at)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    assert gaps == {2.0}
    assert mine[0].task == "demo.echo"
    assert mine[0].payload == {"n": 1}

    kubectl(kube, "annotate", "kjob", jname, "kadence.io/trigger=now-1", "--overwrite")
    wait_for(
        lambda: any(
            r.get("trigger") == "Manual"
            for r in (get(kube, "kjob", jname).get("status") or {}).get("runs", [])
        ),
        what="manual run recorded",
    )
    manual = [
        r for r in asyncio.run(_read_runs(nats_server.url, stream)) if r.run_id.startswith("t-")
    ]
    assert len([r for r in manual if r.job and r.job.name == jname]) == 1
    kubectl(kube, "delete", "kjob", jname)
    kubectl(kube, "delete", "queue", qname)


def test_bad_job_is_reported_and_others_keep_running(
    operator: ManagedProcess, kube: KubeControlPlane
) -> None:
    qname = unique("q")
    apply(kube, queue(qname))
    bad, missing = unique("badcron"), unique("noqueue")
    apply(kube, job(bad, queue=qname, task="t", schedule={"cron": "61 * * * *"}))
    apply(kube, job(missing, queue="does-not-exist", task="t", schedule={"interval": "1s"}))
    ready = wait_for(
        lambda: (c := condition(get(kube, "kjob", bad), "Ready")) and c["status"] == "False" and c,
        what="InvalidSpec",
    )
    assert ready["reason"] == "InvalidSpec"
    assert "spec.schedule.cron" in ready["message"]
    no_queue = wait_for(
        lambda: (
            (c := condition(get(kube, "kjob", missing), "Ready")) and c["status"] == "False" and c
        ),
        what="QueueNotReady",
    )
    assert no_queue["reason"] == "QueueNotReady"
    assert "spec.queue" in no_queue["message"]
    events = kubectl(kube, "get", "events", "-o", "jsonpath={.items[*].reason}")
    assert "InvalidSpec" in events.split()
    assert operator.running
    kubectl(kube, "delete", "kjob", bad, missing)
    kubectl(kube, "delete", "queue", qname)
