"""``kadence-operator`` starts as a uid with no passwd entry, as under the chart's ``runAsUser``.

The images run as uid 65532 with ``HOME=/tmp`` and no ``/etc/passwd`` line for that uid, so
anything on the start path that asks the user database (``getpass.getuser()``, ``pwd``,
``os.getlogin()``, ``~`` without ``HOME``) raises there — kopf, given no identity, did exactly that
and the pod crash-looped. This test starts the real operator against the local control plane as
such a uid, with the environment the chart gives it, and checks that it gets through start-up:
its shard Leases taken, kopf's liveness endpoint answering, no traceback, and a clean exit on
SIGTERM.

It needs root to switch uid (the suite runs as root in CI); elsewhere it is skipped. Where the
interpreter itself is out of that uid's reach (a pyenv Python under a 0700 ``/root``), the
operator runs through ``setpriv`` with one ambient capability, ``CAP_DAC_READ_SEARCH``, so that it
can read its own code: still uid 65532 without a passwd entry, which is what this test is about.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from kadence_devstack.kube import KubeControlPlane, kubeconfig_dict
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import free_port, tail

from .harness import BIN, install_crds, operator_env, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="switching to uid 65532 needs root (the suite runs as root in CI)",
    ),
]

#: The chart's ``podSecurityContext.runAsUser`` / ``runAsGroup``.
UID = GID = 65532


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    """A working directory owned by uid 65532 (pytest's own tmp dirs are root's and 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kadence-nonroot-"))
    try:
        os.chown(path, UID, GID)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _switch_to_uid(cwd: Path) -> tuple[list[str], dict[str, Any]]:
    """How to start a process as uid/gid 65532 with no supplementary groups: an argv prefix and
    keyword arguments for :class:`subprocess.Popen`.

    Plain ``Popen(user=, group=)`` when that uid can run this interpreter and import the
    operator; else ``setpriv`` keeping ``CAP_DAC_READ_SEARCH`` (read and search any file, nothing
    else) as an ambient capability, or a skip that says why.
    """
    plain: dict[str, Any] = {"user": UID, "group": GID, "extra_groups": []}
    probe = [sys.executable, "-c", "import kadence_operator.main"]
    with contextlib.suppress(OSError):
        result = subprocess.run(
            probe, env={"HOME": "/tmp"}, cwd=cwd, capture_output=True, timeout=60, **plain
        )
        if result.returncode == 0:
            return [], plain
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip(f"uid {UID} cannot run {sys.executable} and setpriv (util-linux) is missing")
    caps = "-all,+dac_read_search"
    prefix = [setpriv, f"--reuid={UID}", f"--regid={GID}", "--clear-groups"]
    return [*prefix, f"--inh-caps={caps}", f"--ambient-caps={caps}", "--"], {}


def _give(path: Path, mode: int = 0o600) -> Path:
    os.chown(path, UID, GID)
    path.chmod(mode)
    return path


def _ids(pid: int) -> set[str]:
    """The real, effective, saved and file-system uids of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = (line for line in status.splitlines() if line.startswith("Uid:"))
    return set(line.split()[1:])


@pytest.mark.parametrize(
    "operator_id",
    [
        pytest.param("kadence-operator-5c9d7-x2x4q", id="with-KADENCE_OPERATOR_ID-as-the-chart"),
        pytest.param(None, id="without-KADENCE_OPERATOR_ID"),
    ],
)
def test_operator_starts_as_uid_without_passwd_entry(
    kube: KubeControlPlane, nats_server: NatsServer, home: Path, operator_id: str | None
) -> None:
    if _has_passwd_entry(UID):
        pytest.skip(f"uid {UID} has a passwd entry here; the test needs one without")
    install_crds(kube)
    # The admin kubeconfig and its CA live in root's 0700 tmp dir: copies uid 65532 can read.
    ca = _give(Path(shutil.copy(kube.ca_file, home / "ca.crt")), 0o644)
    kubeconfig = home / "kubeconfig"
    config = kubeconfig_dict(server=kube.server, ca_file=ca, user="admin", token=kube.admin_token)
    kubeconfig.write_text(yaml.safe_dump(config))
    _give(kubeconfig)
    env = operator_env(kube=kube, nats=nats_server, s3=None, operator_id=operator_id or "")
    # What the image and the chart set, and nothing that names a user (getpass reads LOGNAME,
    # USER, LNAME and USERNAME before it asks pwd). KADENCE_OPERATOR_ID is the chart's pod name;
    # without it the identity must still not come from the user database.
    if operator_id is None:
        del env["KADENCE_OPERATOR_ID"]
    env |= {"HOME": "/tmp", "KUBECONFIG": str(kubeconfig), "PYTHONDONTWRITEBYTECODE": "1"}
    port = free_port()
    log_path = home / "operator.log"
    prefix, switch = _switch_to_uid(home)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*prefix, str(BIN / "kadence-operator"), f"--liveness=http://127.0.0.1:{port}/healthz"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
            start_new_session=True,
            **switch,
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"kadence-operator exited with {proc.returncode} during start-up:\n"
                    f"{tail(log_path, 60)}"
                )
            return "shards: now" in tail(log_path, 400)

        # Ready as in tests/integration/harness.py: it holds its member Lease, so it has logged
        # in, connected to NATS and started its loops.
        deadline = time.monotonic() + 60
        while not started():
            assert time.monotonic() < deadline, f"not started after 60s:\n{tail(log_path, 60)}"
            time.sleep(0.25)
        health = wait_for(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2),
            timeout=30,
            what="kopf's liveness endpoint",
        )
        assert health.status_code == 200
        assert _ids(proc.pid) == {str(UID)}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, tail(log_path, 60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    output = log_path.read_text(errors="replace")
    assert "Traceback" not in output, output[-6000:]
    assert "getpwuid" not in output, output[-6000:]
