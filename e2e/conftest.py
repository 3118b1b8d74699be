"""End-to-end tests: the users' path — ``helm install``, worker pods, Services, DNS — on a real
cluster.

Where the local node can start (root on Linux; see :mod:`kadence_devstack.node`), the tests marked
``node`` run on it in ``make test``: the node is started once per session and stopped at the end,
also on failure. The tests marked ``kind`` run on a kind cluster (pytest-kind) where Docker exists
(``make e2e``). A test that cannot run here is skipped with the reason, printed once in the header.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadence_devstack import kind, node
from kadence_devstack.procs import SetupError, StartError

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def kind_unavailable_reason() -> str | None:
    """Why the kind tests cannot run here, or None when they can."""
    try:
        import pytest_kind  # noqa: F401
    except ImportError:
        return "pytest-kind is not installed (make e2e installs it)"
    # The same check as `make demo-kind`'s (kadence_devstack.kind).
    return kind.docker_unavailable_reason()


@functools.cache
def node_unavailable_reason() -> str | None:
    if os.environ.get("KADENCE_E2E_NODE") == "0":
        return "KADENCE_E2E_NODE=0 turns the local node off"
    return node.unavailable_reason()


def pytest_configure(config: pytest.Config) -> None:
    """Use the kind that `make demo-kind` uses (kadence_devstack.binaries.KIND_VERSION), not
    pytest-kind's own default (v0.17.0, whose Kubernetes 1.25 is older than the chart supports),
    unless --kind-bin names one."""
    config.addinivalue_line("markers", "node: runs on the local node (kadence_devstack.node)")
    config.addinivalue_line("markers", "kind: runs on a kind cluster (needs Docker)")
    if kind_unavailable_reason() is None and not config.getoption("kind_bin", default=None):
        config.option.kind_bin = str(kind.kind_binary())


def pytest_report_header(config: pytest.Config) -> list[str]:
    node_reason = node_unavailable_reason()
    kind_reason = kind_unavailable_reason()
    return [
        f"e2e on the local node: skipped — {node_reason}" if node_reason else "e2e: local node",
        f"e2e on kind: skipped — {kind_reason}" if kind_reason else "e2e: kind (Docker found)",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("node") and (reason := node_unavailable_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        if item.get_closest_marker("kind") and (reason := kind_unavailable_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def local_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[node.LocalNode]:
    """The local node, up for the whole session; its logs are copied to ``test-logs/node/``."""
    workdir = tmp_path_factory.mktemp("node")
    local = node.LocalNode(workdir)
    try:
        local.up()
    except (SetupError, StartError) as error:
        local.down()
        pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)
    try:
        yield local
    finally:
        logs = REPO / "test-logs" / "node"
        shutil.rmtree(logs, ignore_errors=True)
        shutil.copytree(workdir / "logs", logs, dirs_exist_ok=True)
        local.down()
