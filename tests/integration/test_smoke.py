"""Smoke tests: each real server answers the way Kadence will use it."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from minio import Minio

from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server

pytestmark = pytest.mark.integration

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.kadence.io"},
    "spec": {
        "group": "smoke.kadence.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def api_client(kube: KubeControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kube.kubeconfig))


def wait_for_crd(api: client.ApiClient, name: str, *, timeout: float = 30) -> None:
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not established in {timeout}s")


def test_crd_and_custom_resource_watch(kube: KubeControlPlane) -> None:
    api = api_client(kube)
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(WIDGET_CRD)
    try:
        wait_for_crd(api, "widgets.smoke.kadence.io")
        objects = client.CustomObjectsApi(api)
        seen: list[tuple[str, str]] = []

        def watch_widgets() -> None:
            stream = watch.Watch()
            for event in stream.stream(
                objects.list_namespaced_custom_object,
                "smoke.kadence.io",
                "v1",
                "default",
                "widgets",
                timeout_seconds=20,
            ):
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if len(seen) >= 2:
                    stream.stop()

        watcher = threading.Thread(target=watch_widgets, daemon=True)
        watcher.start()
        time.sleep(0.5)
        body = {
            "apiVersion": "smoke.kadence.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        objects.create_namespaced_custom_object(
            "smoke.kadence.io", "v1", "default", "widgets", body
        )
        objects.patch_namespaced_custom_object(
            "smoke.kadence.io", "v1", "default", "widgets", "w1", {"spec": {"size": 4}}
        )
        watcher.join(timeout=20)
        assert seen[:2] == [("ADDED", "w1"), ("MODIFIED", "w1")]
        # The schema is enforced by the real server.
        bad = dict(body, metadata={"name": "w2"}, spec={"size": 0})
        with pytest.raises(ApiException) as info:
            objects.create_namespaced_custom_object(
                "smoke.kadence.io", "v1", "default", "widgets", bad
            )
        assert info.value.status == 422
        assert "spec.size" in str(info.value.body)
    finally:
        ext.delete_custom_resource_definition("widgets.smoke.kadence.io")


def test_lease_conflicting_update_is_rejected(kube: KubeControlPlane) -> None:
    coordination = client.CoordinationV1Api(api_client(kube))
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    created = coordination.create_namespaced_lease("default", lease)
    stale_version = created.metadata.resource_version
    created.spec.holder_identity = "b"
    updated = coordination.replace_namespaced_lease(name, "default", created)
    assert updated.spec.holder_identity == "b"
    # A writer still holding the old resourceVersion must lose: this is what makes Leases locks.
    created.metadata.resource_version = stale_version
    created.spec.holder_identity = "c"
    with pytest.raises(ApiException) as info:
        coordination.replace_namespaced_lease(name, "default", created)
    assert info.value.status == 409
    coordination.delete_namespaced_lease(name, "default")
    with pytest.raises(ApiException) as gone:
        coordination.read_namespaced_lease(name, "default")
    assert gone.value.status == 404


async def test_jetstream_publish_fetch_ack(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        stream = f"SMOKE_{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], retention="workqueue")
        ack = await js.publish(f"{stream}.a", b"hello", headers={"Nats-Msg-Id": "m1"})
        dup = await js.publish(f"{stream}.a", b"hello", headers={"Nats-Msg-Id": "m1"})
        assert ack.seq == 1
        assert dup.duplicate
        sub = await js.pull_subscribe(f"{stream}.a", durable="smoke", stream=stream)
        msgs = await sub.fetch(1, timeout=5)
        assert [m.data for m in msgs] == [b"hello"]
        await msgs[0].ack_sync()
        info = await js.stream_info(stream)
        assert info.state.messages == 0  # work-queue retention removed the acked message
        await js.delete_stream(stream)
    finally:
        await nc.close()


def test_s3_put_get_stat(s3_server: S3Server) -> None:
    s3 = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    data = b"kadence output\n" * 1000
    put = s3.put_object(bucket, "runs/r1/result.txt", io.BytesIO(data), len(data))
    stat = s3.stat_object(bucket, "runs/r1/result.txt")
    assert stat.size == len(data)
    assert stat.etag == put.etag
    response = s3.get_object(bucket, "runs/r1/result.txt")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()


def test_kubectl_against_apiserver(kube: KubeControlPlane) -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kube.kubeconfig), "get", "namespaces", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout.split()
    version = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kube.kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert '"gitVersion": "v1.35' in version.stdout, version.stdout


def test_service_account_identity_is_enforced_by_rbac(kube: KubeControlPlane) -> None:
    core = client.CoreV1Api(api_client(kube))
    core.create_namespaced_service_account(
        "default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="smoke-sa"))
    )
    sa_config = kube.kubeconfig_for_service_account("default", "smoke-sa")
    as_sa = client.CoreV1Api(config.new_client_from_config(config_file=str(sa_config)))
    with pytest.raises(ApiException) as info:
        as_sa.list_namespaced_secret("default")
    assert info.value.status == 403
    assert "system:serviceaccount:default:smoke-sa" in str(info.value.body)
