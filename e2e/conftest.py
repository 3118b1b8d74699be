"""End-to-end tests on a kind cluster (pytest-kind). Run with ``make e2e`` where Docker exists.

Where Docker or kind is not usable the whole folder is skipped, and the reason is printed once.
These tests are not part of ``make test``.
"""

from __future__ import annotations

import functools

import pytest

from kadence_devstack import kind


@functools.cache
def unavailable_reason() -> str | None:
    """Why e2e cannot run here, or None when it can."""
    try:
        import pytest_kind  # noqa: F401
    except ImportError:
        return "pytest-kind is not installed (make e2e installs it)"
    # The same check as `make demo-kind`'s (kadence_devstack.kind).
    return kind.docker_unavailable_reason()


def pytest_configure(config: pytest.Config) -> None:
    """Use the kind that `make demo-kind` uses (kadence_devstack.binaries.KIND_VERSION), not
    pytest-kind's own default (v0.17.0, whose Kubernetes 1.25 is older than the chart supports),
    unless --kind-bin names one."""
    if unavailable_reason() is None and not config.getoption("kind_bin", default=None):
        config.option.kind_bin = str(kind.kind_binary())


def pytest_report_header(config: pytest.Config) -> str:
    reason = unavailable_reason()
    return f"e2e: skipped — {reason}" if reason else "e2e: Docker engine found, kind will be used"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        item.add_marker(marker)
