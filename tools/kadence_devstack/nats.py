"""nats-server with JetStream on loopback: one node, or a 3-node cluster for replication tests."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from kadence_devstack import binaries, pki
from kadence_devstack.procs import ManagedProcess, free_ports

# The monitoring endpoint answers /healthz?js-enabled-only=true once JetStream is up.
_HEALTH = "/healthz?js-enabled-only=true"


def _ready(monitor_port: int) -> bool:
    import requests

    return requests.get(f"http://127.0.0.1:{monitor_port}{_HEALTH}", timeout=1).ok


@dataclass(frozen=True)
class AuthCallout:
    """nats-server's ``authorization { users, auth_callout }`` (config mode, account ``$G``).

    Every client but the callout's own static user is sent to the auth callout service on
    ``$SYS.REQ.USER.AUTH``; the user JWTs it answers with must be signed by ``issuer`` (an
    account public key, ``A…``). The static user may only take those requests and answer them.
    """

    issuer: str
    user: str
    password: str = field(repr=False)

    def config(self) -> str:
        # JSON strings are valid in nats-server's config syntax, and quote anything.
        return (
            "authorization {\n"
            "  users: [\n"
            f"    {{ user: {json.dumps(self.user)}, password: {json.dumps(self.password)},\n"
            '      permissions: { subscribe: ["$SYS.REQ.USER.AUTH"], publish: { deny: [">"] },\n'
            "                     allow_responses: true } }\n"
            "  ]\n"
            "  auth_callout {\n"
            f"    issuer: {json.dumps(self.issuer)}\n"
            f"    auth_users: [{json.dumps(self.user)}]\n"
            "  }\n"
            "}\n"
        )


@dataclass
class NatsNode:
    name: str
    port: int
    monitor_port: int
    cluster_port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsServer:
    """One nats-server (``cluster_size=1``) or a JetStream cluster of 3 or 5 nodes."""

    workdir: Path
    cluster_size: int = 1
    #: JetStream's ``sync_interval`` (``"always"``: fsync before every acknowledgement, as the
    #: chart's bundled server does); None: the server's default (a flush every two minutes).
    sync_interval: str | None = None
    #: A cluster's nodes do not tell clients the other nodes' URLs (``--no_advertise``): a
    #: client stays on the URLs it was given (a proxy's, in the fault suite).
    no_advertise: bool = False
    #: Clients authenticate through an auth callout service (tests of kadence_operator.identity).
    auth_callout: AuthCallout | None = None
    #: Clients must connect with TLS (a CA and certificate of the server's own, for 127.0.0.1;
    #: :attr:`ca_file` is what clients trust). nats-server then refuses plain connections.
    tls: bool = False
    nodes: list[NatsNode] = field(default_factory=list)
    #: The CA certificate clients verify the server with (``tls`` only).
    ca_file: Path | None = None
    _cert: tuple[Path, Path] = field(init=False, repr=False, default=(Path(), Path()))

    @property
    def url(self) -> str:
        """All node URLs, comma-separated like KADENCE_NATS_URL (give nats-py ``urls``)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, *, timeout: float = 30.0) -> None:
        binary = binaries.venv_binary("nats-server")
        ports = free_ports(3 * self.cluster_size)
        specs = [
            (f"n{i}", ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
            for i in range(self.cluster_size)
        ]
        routes = ",".join(f"nats-route://127.0.0.1:{cp}" for _, _, _, cp in specs)
        for name, port, monitor, cluster_port in specs:
            argv = [
                str(binary),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-m",
                str(monitor),
                "-js",
                "-sd",
                str(self.workdir / name),
                "-n",
                name,
            ]
            if self.sync_interval is not None or self.auth_callout is not None or self.tls:
                # No command-line flags for these: a config file with only them, the flags
                # above set the rest.
                text = ""
                if self.sync_interval is not None:
                    text += f"jetstream {{\n  sync_interval: {self.sync_interval}\n}}\n"
                if self.auth_callout is not None:
                    text += self.auth_callout.config()
                if self.tls:
                    text += self._tls_config()
                conf = self.workdir / f"{name}.conf"
                conf.parent.mkdir(parents=True, exist_ok=True)
                conf.write_text(text)
                conf.chmod(0o600)
                argv += ["-c", str(conf)]
            if self.cluster_size > 1:
                argv += [
                    "--cluster_name",
                    "kadence",
                    "--cluster",
                    f"nats://127.0.0.1:{cluster_port}",
                    "--routes",
                    routes,
                ]
                if self.no_advertise:
                    argv.append("--no_advertise")
            proc = ManagedProcess(
                name=f"nats-server {name}", argv=argv, log_path=self.workdir / f"{name}.log"
            )
            self.nodes.append(NatsNode(name, port, monitor, cluster_port, proc))
        # Cluster nodes only report healthy once they see a quorum, so start all, then wait.
        for node in self.nodes:
            node.process.launch()
        for node in self.nodes:
            node.process.wait_ready(
                ready=functools.partial(_ready, node.monitor_port), timeout=timeout
            )

    def _tls_config(self) -> str:
        """``tls { cert_file, key_file }``: every client connection must be TLS (the monitoring
        port stays plain HTTP on loopback, for the health checks)."""
        if self.ca_file is None:
            files = pki.write_server_certificate(
                self.workdir / "pki", ca_name="kadence nats CA", common_name="127.0.0.1"
            )
            self.ca_file, self._cert = files.ca, (files.cert, files.key)
        cert, key = self._cert
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(cert))}\n"
            f"  key_file: {json.dumps(str(key))}\n"
            "  timeout: 5\n"
            "}\n"
        )

    def wait_healthy(self, *, timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        """Wait until the (running) nodes pass the full ``/healthz``: a cluster has a meta leader.

        ``start`` only waits for JetStream to be enabled; until the meta leader is elected a
        cluster answers stream creation with a timeout.
        """
        import time

        import requests

        deadline = time.monotonic() + timeout
        pending = [self.nodes[i] for i in (range(len(self.nodes)) if nodes is None else nodes)]
        last = ""
        while pending:
            node = pending[0]
            try:
                answer = requests.get(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=1)
                last = answer.text.strip()
                if answer.ok:
                    pending.pop(0)
                    continue
            except requests.RequestException as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {node.name} not healthy after {timeout}s: {last}")
            time.sleep(0.2)

    def restart_node(self, index: int, *, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again with the same ports and data."""
        node = self.nodes[index]
        monitor = node.monitor_port
        node.process.start(ready=lambda: _ready(monitor), timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop()
