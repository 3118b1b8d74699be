"""Session fixtures: the real servers, started once per test session on loopback.

Nothing here mocks a server. The servers come from :mod:`kadence_devstack`; a set-up problem
(no Go and no KUBEBUILDER_ASSETS, a server that will not start) fails the tests that need it with
one clear message, and a failing test gets the tail of every server log in its report and a copy of
the logs under ``test-logs/<test>/``.
"""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess, SetupError, StartError
from kadence_devstack.s3 import S3Server

REPO = Path(__file__).resolve().parent.parent
_LIVE: list[ManagedProcess] = []


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI cancel, `kill`) would end pytest without its fixture finalizers and leave the
    # servers running; as KeyboardInterrupt, pytest tears the session down and stops them.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def track(processes: list[ManagedProcess]) -> None:
    """Include these processes' logs in the report of any failing test."""
    _LIVE.extend(processes)


def _fail_setup(error: Exception) -> None:
    pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager, admin kubeconfig at ``kube.kubeconfig``."""
    plane = KubeControlPlane(tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
    except (SetupError, StartError) as error:
        plane.stop()
        _fail_setup(error)
    track(plane.processes)
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server with JetStream; ``nats_server.url``."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    try:
        server.start()
    except (SetupError, StartError) as error:
        server.stop()
        _fail_setup(error)
    track([n.process for n in server.nodes])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS S3 gateway; ``s3_server.endpoint``, ``access_key``, ``secret_key``."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        server.start()
    except (SetupError, StartError) as error:
        server.stop()
        _fail_setup(error)
    assert server.process is not None
    track([server.process])
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _LIVE:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
        saved = REPO / "test-logs" / safe
        saved.mkdir(parents=True, exist_ok=True)
        for proc in _LIVE:
            if proc.log_path.exists():
                shutil.copy(proc.log_path, saved / proc.log_path.name)
            report.sections.append((f"log tail: {proc.name}", proc.log_tail(25)))
        report.sections.append(("server logs", f"copied to {saved}"))
    return report
