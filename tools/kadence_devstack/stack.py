"""The whole local stack: control plane, NATS and S3, with the environment to reach them."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server


@dataclass
class LocalStack:
    """Starts what Kadence needs on loopback under ``workdir`` and stops it all in reverse."""

    workdir: Path
    with_kube: bool = True
    kube: KubeControlPlane | None = None
    nats: NatsServer | None = None
    s3: S3Server | None = None
    _started: list[KubeControlPlane | NatsServer | S3Server] = field(default_factory=list)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.nats = NatsServer(self.workdir / "nats")
            self.nats.start()
            self._started.append(self.nats)
            self.s3 = S3Server(self.workdir / "s3")
            self.s3.start()
            self._started.append(self.s3)
            if self.with_kube:
                self.kube = KubeControlPlane(self.workdir / "kube")
                self._started.append(self.kube)
                self.kube.start()
        except BaseException:
            self.stop()
            raise

    def environment(self) -> dict[str, str]:
        """Variables the operator, the worker and kubectl read to reach this stack."""
        env: dict[str, str] = {}
        if self.kube is not None:
            env["KUBECONFIG"] = str(self.kube.kubeconfig)
        if self.nats is not None:
            env["KADENCE_NATS_URL"] = self.nats.url
        if self.s3 is not None:
            env |= {
                "KADENCE_S3_ENDPOINT": self.s3.endpoint,
                "KADENCE_S3_SECURE": "false",
                "KADENCE_S3_ACCESS_KEY": self.s3.access_key,
                "KADENCE_S3_SECRET_KEY": self.s3.secret_key,
            }
        return env

    def write_env_file(self, path: Path) -> Path:
        """Write ``export`` lines (mode 0600: it holds the local S3 secret) for ``source``-ing."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.environment().items())]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        while self._started:
            server = self._started.pop()
            with contextlib.suppress(Exception):
                server.stop()


@contextlib.contextmanager
def running(workdir: Path, *, with_kube: bool = True) -> Iterator[LocalStack]:
    stack = LocalStack(workdir, with_kube=with_kube)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
