"""etcd + kube-apiserver (+ kube-controller-manager) on loopback, with an admin identity.

The API server runs with RBAC authorization, a static token for the admin (group
``system:masters``) and a service-account signing key, so tests can also act as any
ServiceAccount through the TokenRequest API
(:meth:`KubeControlPlane.kubeconfig_for_service_account`).
kube-controller-manager, when available, makes namespace deletion and ownerReference garbage
collection work as on a real cluster.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess, free_ports

ADMIN_USER = "kadence-admin"


def _write_service_account_keys(folder: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = folder / "sa.key"
    public = folder / "sa.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private.chmod(0o600)
    return private, public


def kubeconfig_dict(*, server: str, ca_file: Path, user: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kadence",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kadence", "context": {"cluster": "kadence", "user": user}}],
        "current-context": "kadence",
    }


@dataclass
class KubeControlPlane:
    """A running etcd + kube-apiserver (+ kube-controller-manager) in ``workdir``."""

    workdir: Path
    with_controller_manager: bool = True
    processes: list[ManagedProcess] = field(default_factory=list)
    server: str = ""
    admin_token: str = ""
    kubeconfig: Path = Path()
    ca_file: Path = Path()
    has_controller_manager: bool = False

    def start(self, *, timeout: float = 60.0) -> None:
        bins = binaries.control_plane()
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        etcd_port, peer_port, api_port, kcm_port = free_ports(4)

        etcd = ManagedProcess(
            name="etcd",
            argv=[
                str(bins.etcd),
                "--name=kadence",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=kadence=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            log_path=logs / "etcd.log",
        )
        self.processes.append(etcd)
        etcd.start(
            ready=lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).ok,
            timeout=timeout,
        )

        self.admin_token = secrets.token_hex(24)
        token_file = self.workdir / "tokens.csv"
        token_file.write_text(f"{self.admin_token},{ADMIN_USER},{ADMIN_USER},system:masters\n")
        token_file.chmod(0o600)
        sa_key, sa_pub = _write_service_account_keys(self.workdir)
        cert_dir = self.workdir / "pki"
        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = ManagedProcess(
            name="kube-apiserver",
            argv=[
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--cert-dir={cert_dir}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--token-auth-file={token_file}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--v=1",
            ],
            log_path=logs / "kube-apiserver.log",
        )
        self.processes.append(apiserver)
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        apiserver.start(
            ready=lambda: (
                requests.get(f"{self.server}/readyz", headers=headers, verify=False, timeout=2).ok
            ),
            timeout=timeout,
        )
        self.ca_file = cert_dir / "apiserver.crt"
        self.kubeconfig = self.workdir / "kubeconfig"
        self._write_kubeconfig(self.kubeconfig, user=ADMIN_USER, token=self.admin_token)

        if self.with_controller_manager and bins.kube_controller_manager is not None:
            kcm = ManagedProcess(
                name="kube-controller-manager",
                argv=[
                    str(bins.kube_controller_manager),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={kcm_port}",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={self.ca_file}",
                    "--controllers=*,-nodeipam,-nodelifecycle,-ttl,-cloud-node-lifecycle",
                    "--concurrent-gc-syncs=5",
                    "--v=1",
                ],
                log_path=logs / "kube-controller-manager.log",
            )
            self.processes.append(kcm)
            kcm.start(
                ready=lambda: (
                    requests.get(
                        f"https://127.0.0.1:{kcm_port}/healthz", verify=False, timeout=2
                    ).ok
                ),
                timeout=timeout,
            )
            self.has_controller_manager = True

    def _write_kubeconfig(self, path: Path, *, user: str, token: str) -> None:
        config = kubeconfig_dict(server=self.server, ca_file=self.ca_file, user=user, token=token)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: tuple[str, ...] = (),
        expiration_seconds: int = 3600,
    ) -> str:
        """A token of ``system:serviceaccount:<namespace>:<name>`` from the TokenRequest API,
        exactly as the kubelet gets a projected one (``audiences``: none, the API server's)."""
        spec: dict[str, object] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        response = requests.post(
            f"{self.server}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            verify=str(self.ca_file),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["status"]["token"])

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:<namespace>:<name>``
        (the ServiceAccount must exist; :meth:`service_account_token`)."""
        token = self.service_account_token(namespace, name, expiration_seconds=expiration_seconds)
        path = self.workdir / f"kubeconfig-sa-{namespace}-{name}"
        self._write_kubeconfig(path, user=f"{namespace}-{name}", token=token)
        return path

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
