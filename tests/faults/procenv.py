"""The environment of the suite's own helper processes (the API-server and TCP proxies)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def helper_env() -> dict[str, str]:
    """A minimal environment that runs this checkout's ``tests.faults`` (and its tools)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tools")]),
        "PYTHONUNBUFFERED": "1",
    }
