"""An S3 endpoint from SeaweedFS (``weed mini``) on loopback, used through the minio client."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess, free_ports


@dataclass
class S3Server:
    """``weed mini`` with only the S3 gateway in use; credentials are made up per start."""

    workdir: Path
    access_key: str = "kadence"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``host:port``, the form the minio client takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, *, timeout: float = 60.0) -> None:
        import requests

        binary = binaries.venv_binary("weed")
        (
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ) = free_ports(10)
        self.port = s3
        argv = [
            str(binary),
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
        ]
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            # weed mini creates an admin identity from these two variables.
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        self.process = ManagedProcess(
            name="seaweedfs (weed mini)",
            argv=argv,
            log_path=self.workdir / "weed.log",
            env=env,
            cwd=self.workdir,
        )
        # An unsigned request is refused with 403 once the S3 gateway is serving.
        self.process.start(
            ready=lambda: requests.get(self.url, timeout=1).status_code == 403, timeout=timeout
        )

    def restart(self, *, timeout: float = 60.0) -> None:
        """Start a stopped server again: same ports, data and keys (for outage tests)."""
        import requests

        if self.process is None:
            raise RuntimeError("the S3 server was never started")
        self.process.start(
            ready=lambda: requests.get(self.url, timeout=1).status_code == 403, timeout=timeout
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
