"""NATS with TLS on a real nats-server: the SDK connects through ``KADENCE_NATS_CA``, and the
server refuses a plain connection and a client that does not trust its CA (issue #28: a
ServiceAccount token must never cross the wire in clear)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from kadence.client import KadenceClient
from kadence.config import Settings
from kadence.streams import ensure_queue_stream
from kadence_devstack.nats import NatsServer
from kadence_devstack.pki import write_server_certificate
from tests.conftest import track

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-tls"), tls=True)
    try:
        server.start()
        track([n.process for n in server.nodes])
        yield server
    finally:
        server.stop()


async def test_the_sdk_connects_with_the_servers_ca(tls_server: NatsServer) -> None:
    assert tls_server.ca_file is not None
    settings = Settings(
        nats_urls=tuple(tls_server.urls), namespace="tls", nats_ca=str(tls_server.ca_file)
    )
    client = await KadenceClient.connect(settings, connect_timeout=5)
    try:
        await ensure_queue_stream(client.js, namespace="tls", queue="reports", ack_wait=30)
        await client.publish("reports", b"over TLS", partition=0)
        info = await client.js.stream_info("KADENCE_tls_reports")
        assert info.state.messages == 1
    finally:
        await client.close()


async def refusal(connecting: Awaitable[Any]) -> str:
    """The error a connection attempt ends with ("" if it was let in: then it is closed)."""
    try:
        connection = await connecting
    except (nats.errors.Error, OSError) as error:
        return f"{type(error).__name__}: {error}"
    await connection.close()
    return ""


async def test_a_plain_connection_is_refused(tls_server: NatsServer) -> None:
    """A client that writes its CONNECT (its credentials) in clear gets no service: the server
    announces that TLS is required and answers the clear text with an error. (nats-py itself
    would upgrade; this is what any other client sending clear text meets.)"""
    node = tls_server.nodes[0]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", node.port), 5)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ")
        assert json.loads(info[5:])["tls_required"] is True
        writer.write(b'CONNECT {"verbose":false,"auth_token":"a-token"}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
    assert b"PONG" not in answer
    assert answer == b"" or answer.startswith(b"-ERR"), answer


async def test_a_client_that_does_not_trust_the_servers_ca_is_refused(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    other = write_server_certificate(tmp_path, ca_name="another CA", common_name="127.0.0.1")
    settings = Settings(nats_urls=tuple(tls_server.urls), nats_ca=str(other.ca))
    refused = await refusal(
        KadenceClient.connect(
            settings, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False
        )
    )
    assert "CERTIFICATE_VERIFY_FAILED" in refused, refused
