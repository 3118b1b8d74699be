"""The Kubernetes API client the operator's own loops use (kopf has its own for handlers).

The official client is synchronous; callers run it with :func:`asyncio.to_thread`. In a pod the
in-cluster ServiceAccount is used, elsewhere ``$KUBECONFIG`` or ``~/.kube/config``. The status
writers' GET and merge-PATCH run on the event loop instead (:class:`AsyncApi`), with the same
configuration.
"""

from __future__ import annotations

import json
import os
import ssl
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes import client, config

from kadence.config import user_agent

#: The operator's ``User-Agent``, hence the field manager of its writes.
USER_AGENT = user_agent("kadence-operator")


def api_client() -> client.ApiClient:
    api: client.ApiClient
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        load: Any = config.load_incluster_config
        load()
        api = client.ApiClient()
    else:
        new_client: Any = config.new_client_from_config
        api = new_client(config_file=os.environ.get("KUBECONFIG"))
    api.user_agent = USER_AGENT
    return api


def micro_time(moment: datetime | None = None) -> str:
    """A Kubernetes ``MicroTime`` string (what Lease ``renewTime`` wants)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HttpError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status
        self.headers = headers


class AsyncApi:
    """GET and merge-PATCH of custom objects on the event loop (aiohttp, which kopf brings): the
    status writers' only way to the API server.

    The official client is synchronous: in a worker thread, every socket operation of a PATCH
    waits for the GIL, which a busy event loop (a thousand fires a second) hardly gives up — the
    writes then crawl at a few dozen a second. Same host, CA, client certificate and token as the
    official client's configuration (the token is read through it, so a rotating ServiceAccount
    token or an exec credential plugin is refreshed as there), its basic auth and its proxy.
    """

    def __init__(self, api: client.ApiClient, *, connections: int) -> None:
        self._config = api.configuration
        self._user_agent: str = api.user_agent
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext:
        config = self._config
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file or None)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        # As the official client does (``Configuration.auth_settings``), refreshing if it can.
        for setting in self._config.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        if self._config.username or self._config.password:
            headers["Authorization"] = self._config.get_basic_auth_token()
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            )
        url = self._config.host.rstrip("/") + path
        async with self._session.request(
            method,
            url,
            data=body,
            headers=self._headers(content_type),
            proxy=self._config.proxy or None,
            proxy_headers=self._config.proxy_headers or None,
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise HttpError(response.status, dict(response.headers), text)
            result: dict[str, Any] = json.loads(text)
            return result

    async def get(self, path: str) -> dict[str, Any]:
        return await self._request("GET", path)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode()
        return await self._request("PATCH", path, data, "application/merge-patch+json")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
