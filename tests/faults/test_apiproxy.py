"""The API-server proxy of the ``api-errors`` fault: its choices (pure); the process in front of
a real kube-apiserver (forwarding, a streaming watch, injected 409/429, healing); and in front of
one that dies (open streams cut, then 502)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiohttp import web
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kadence_devstack.kube import ADMIN_USER, KubeControlPlane, kubeconfig_dict
from kadence_devstack.procs import free_port
from tests.faults import apiproxy


def test_only_writes_get_conflicts_and_only_api_paths_are_failed() -> None:
    failing = apiproxy.Failing(rate=1.0, seed=3)
    for method in ("GET", "DELETE"):
        assert {failing.decide(method, "/api/v1/namespaces/n/pods") for _ in range(50)} == {429}
    for method in ("POST", "PUT", "PATCH"):
        path = "/apis/g/v1/namespaces/n/r/x"
        assert {failing.decide(method, path) for _ in range(100)} == {409, 429}
    for path in ("/readyz", "/version", "/openapi/v2"):
        assert failing.decide("GET", path) == 0


def test_the_fraction_is_seeded() -> None:
    def draws(seed: int) -> list[int]:
        failing = apiproxy.Failing(rate=0.4, seed=seed)
        return [failing.decide("PUT", "/api/v1/namespaces/n/pods/p") for _ in range(1000)]

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    assert 330 < sum(1 for code in first if code) < 470


def test_a_conflict_names_the_object_as_the_api_server_does() -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/faults/leases/job-x"
    assert apiproxy.resource_of(path) == ("coordination.k8s.io", "leases", "job-x")
    assert apiproxy.resource_of("/api/v1/namespaces/n/events") == ("", "events", "")
    assert apiproxy.resource_of("/apis/kadence.io/v1/namespaces/n/jobs/j/status") == (
        "kadence.io",
        "jobs",
        "j",
    )
    response = apiproxy.conflict(path)
    assert response.status == 409
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409)
    assert body["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "job-x": '
        + apiproxy.CONFLICT_MESSAGE
    )
    assert apiproxy.too_many_requests().headers["Retry-After"] == "1"


@pytest.fixture
def proxy(kube: KubeControlPlane, tmp_path: Path) -> Iterator[apiproxy.ApiProxy]:
    started = apiproxy.ApiProxy(workdir=tmp_path / "proxy", log_path=tmp_path / "proxy.log")
    try:
        started.start(backend=kube.server, backend_ca=kube.ca_file, ready_token=kube.admin_token)
        yield started
    finally:
        started.stop()


def _client(kube: KubeControlPlane, proxy: apiproxy.ApiProxy, tmp_path: Path) -> client.ApiClient:
    path = tmp_path / "kubeconfig-proxy"
    path.write_text(
        yaml.safe_dump(
            kubeconfig_dict(
                server=proxy.url, ca_file=proxy.ca_file, user=ADMIN_USER, token=kube.admin_token
            )
        )
    )
    new_client: Any = config.new_client_from_config
    api: client.ApiClient = new_client(config_file=str(path))
    api.user_agent = "proxy-test/1"
    return api


@pytest.mark.integration
def test_the_proxy_forwards_streams_and_fails_on_demand(
    kube: KubeControlPlane, proxy: apiproxy.ApiProxy, tmp_path: Path
) -> None:
    core = client.CoreV1Api(_client(kube, proxy, tmp_path))
    namespace = f"proxy-{int(time.time() * 1000)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))

    # A watch streams through: an object created after it opened arrives while it is open
    # (and not when the response ends, 20 s later).
    seen: list[float] = []

    def follow() -> None:
        with requests.get(
            f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps",
            params={
                "watch": "true",
                "fieldSelector": "metadata.name=first",
                "timeoutSeconds": "20",
            },
            headers={"Authorization": f"Bearer {kube.admin_token}"},
            verify=str(proxy.ca_file),
            stream=True,
            timeout=30,
        ) as stream:
            for line in stream.iter_lines():
                if line:
                    seen.append(time.monotonic())
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(1.0)
    created = time.monotonic()
    first = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="first"))
    core.create_namespaced_config_map(namespace, first)
    follower.join(10)
    assert len(seen) == 1
    assert seen[0] - created < 3.0

    proxy.fail(rate=1.0, seed=1)
    time.sleep(0.5)
    errors: list[ApiException] = []
    for i in range(20):
        try:
            core.patch_namespaced_config_map("first", namespace, {"data": {"i": str(i)}})
        except ApiException as error:
            errors.append(error)
    assert len(errors) == 20
    assert {e.status for e in errors} == {409, 429}
    for answer in errors:
        body = json.loads(str(answer.body))
        assert body["kind"] == "Status"
        assert body["code"] == answer.status
        assert body["reason"] == ("Conflict" if answer.status == 409 else "TooManyRequests")
        if answer.status == 429:
            assert dict(answer.headers or {})["Retry-After"] == "1"
    with pytest.raises(ApiException) as refused:
        core.read_namespaced_config_map("first", namespace)
    assert refused.value.status == 429
    new_watch = requests.get(
        f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps",
        params={"watch": "true"},
        headers={"Authorization": f"Bearer {kube.admin_token}"},
        verify=str(proxy.ca_file),
        timeout=10,
    )
    assert new_watch.status_code == 429

    proxy.heal()
    time.sleep(0.5)
    assert core.read_namespaced_config_map("first", namespace).data is None  # none went through
    core.delete_namespace(namespace)
    log = proxy.log_path.read_text()
    # 20 PATCHes, the GET (which urllib3 retried: it retries a GET's 429 with Retry-After) and
    # the watch.
    assert log.count("inject 4") >= 22
    assert "(watch) ua=python-requests" in log
    assert "ua=proxy-test" in log
    assert "failing off after" in log


class FakeApiServer:
    """An HTTPS server on its own event loop and thread: ``/readyz``, and ``/stream``, which sends
    one line and then holds the response open until :meth:`die` aborts its connection."""

    def __init__(self, folder: Path) -> None:
        self.ca_file, cert, key = apiproxy.write_certificates(folder)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.dying = asyncio.Event()
        self.runner: web.AppRunner | None = None
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(str(cert), str(key))
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self._start(tls))

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _start(self, tls: ssl.SSLContext) -> None:
        async def readyz(request: web.Request) -> web.StreamResponse:
            return web.Response(text="ok")

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"type":"ADDED"}\n')
            await self.dying.wait()
            assert request.transport is not None
            request.transport.abort()
            return response

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/stream", stream)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=tls).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def die(self) -> None:
        """Abort the open streams, then stop listening."""

        async def stop() -> None:
            self.dying.set()
            await asyncio.sleep(0.2)
            if self.runner is not None:
                await self.runner.cleanup()

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.integration
def test_a_dead_api_server_cuts_streams_and_gets_502(tmp_path: Path) -> None:
    backend = FakeApiServer(tmp_path / "backend")
    proxy = apiproxy.ApiProxy(workdir=tmp_path / "proxy", log_path=tmp_path / "proxy.log")
    try:
        proxy.start(backend=backend.url, backend_ca=backend.ca_file, ready_token="t")
        verify = str(proxy.ca_file)
        with requests.get(f"{proxy.url}/stream", verify=verify, stream=True, timeout=10) as open_:
            lines = open_.iter_lines()
            assert next(lines) == b'{"type":"ADDED"}'  # streamed, while the response is open
            backend.die()
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                list(lines)  # cut, not ended as if complete
        answer = requests.get(f"{proxy.url}/api/v1/namespaces", verify=verify, timeout=10)
        assert answer.status_code == 502
        log = proxy.log_path.read_text()
        assert "cut GET /stream" in log
        assert "502 GET /api/v1/namespaces" in log
    finally:
        proxy.stop()
