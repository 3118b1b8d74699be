"""End-to-end tests on a kind cluster (pytest-kind). Run with ``make e2e`` where Docker exists.

Where Docker or kind is not usable the whole folder is skipped, and the reason is printed once.
These tests are not part of ``make test``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest


@functools.cache
def unavailable_reason() -> str | None:
    """Why e2e cannot run here, or None when it can."""
    try:
        import pytest_kind  # noqa: F401
    except ImportError:
        return "pytest-kind is not installed (make e2e installs it)"
    if shutil.which("docker") is None:
        return "no docker client on PATH: kind needs a Docker engine"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"docker info failed: {error}"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers `docker info`: {last}"
    return None


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
