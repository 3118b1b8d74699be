"""Helpers for tests that run the operator as a real process against the real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_devstack.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.25, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # the object may not exist yet
            last = error
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


def kubectl(kube: KubeControlPlane, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def apply(kube: KubeControlPlane, *docs: dict[str, Any]) -> str:
    # JSON, not YAML: a YAML 1.1 reader would turn a key like `n` into the boolean false.
    items = {"apiVersion": "v1", "kind": "List", "items": list(docs)}
    return kubectl(kube, "apply", "-f", "-", stdin=json.dumps(items))


def install_crds(kube: KubeControlPlane) -> None:
    kubectl(kube, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("jobs.kadence.io", "queues.kadence.io"):
        kubectl(kube, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")


def operator_env(
    *,
    kube: KubeControlPlane,
    nats: NatsServer,
    s3: S3Server | None,
    operator_id: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "KUBECONFIG": str(kube.kubeconfig),
        "KADENCE_NATS_URL": nats.url,
        "KADENCE_OPERATOR_NAMESPACE": "default",
        "KADENCE_OPERATOR_ID": operator_id,
        "KADENCE_STATUS_INTERVAL": "1",
        "KADENCE_QUEUE_STATUS_INTERVAL": "1",
        "KADENCE_DRIFT_INTERVAL": "2",
        "KADENCE_LEASE_DURATION": "6",
        "KADENCE_LEASE_RENEW": "2",
        "KADENCE_LEASE_RETRY": "1",
        "KADENCE_DUPLICATE_WINDOW": "60",
        "KADENCE_SHARDS": "8",
    }
    if s3 is not None:
        env |= {
            "KADENCE_S3_ENDPOINT": s3.endpoint,
            "KADENCE_S3_SECURE": "false",
            "KADENCE_S3_ACCESS_KEY": s3.access_key,
            "KADENCE_S3_SECRET_KEY": s3.secret_key,
        }
    return env | (extra or {})


def start_operator(workdir: Path, env: dict[str, str], *, name: str = "operator") -> ManagedProcess:
    proc = ManagedProcess(
        name=f"kadence-operator {name}",
        argv=[str(BIN / "kadence-operator")],
        log_path=workdir / f"{name}.log",
        env=env,
    )
    # Ready once it holds its member Lease (it has then logged in and started its loops).
    proc.start(ready=lambda: "shards: now" in proc.log_tail(200), timeout=60)
    return proc


def get(kube: KubeControlPlane, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
    out = kubectl(kube, "get", kind, name, "-n", namespace, "-o", "json")
    body: dict[str, Any] = json.loads(out)
    return body


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def kubectl_at(kubeconfig: Path, *args: str) -> str:
    """kubectl against any kubeconfig (e.g. the demo's own stack)."""
    result = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
