"""An S3 endpoint from SeaweedFS (``weed mini``) on loopback, used through the minio client."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess, free_ports


@dataclass(frozen=True)
class S3Identity:
    """A SeaweedFS S3 user besides the admin: its keys and what it may do.

    ``actions`` are SeaweedFS static-identity actions such as ``Read:bucket/prefix/*``
    (:func:`kadence.outputaccess.seaweedfs_actions` gives a namespace's). The secret is left out
    of ``repr`` so that a failing test never prints it.
    """

    name: str
    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...]

    @classmethod
    def new(cls, name: str, actions: Sequence[str]) -> S3Identity:
        """An identity with made-up keys (access key ``<name>-<random>``)."""
        return cls(name, f"{name}-{secrets.token_hex(4)}", secrets.token_hex(16), tuple(actions))

    def config(self) -> dict[str, object]:
        """The identity's entry in the ``identities`` list of SeaweedFS's S3 config file."""
        return {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }


@dataclass
class S3Server:
    """``weed mini`` with only the S3 gateway in use; credentials are made up per start.

    The admin identity comes from ``access_key``/``secret_key`` (weed mini makes it from the
    ``AWS_*`` environment). ``identities`` adds limited users: they are written to an S3 config
    file passed with ``-s3.config``; without them no config file is used, as before.
    """

    workdir: Path
    access_key: str = "kadence"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    identities: Sequence[S3Identity] = ()
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
        if self.identities:
            argv.append(f"-s3.config={self._write_config()}")
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

    def _write_config(self) -> Path:
        """The S3 config file with the extra identities, readable only by its owner (it holds
        their secret keys)."""
        path = self.workdir / "s3-identities.json"
        text = json.dumps({"identities": [i.config() for i in self.identities]}, indent=2)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        return path

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
