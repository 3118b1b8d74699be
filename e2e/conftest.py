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
