"""The ``clock-jump`` fault's mechanics (:mod:`tests.faults.clockjump`) on a real child process:
with libfaketime preloaded, its wall clock follows the offset file at run time and its monotonic
clock stays real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.faults import clockjump

#: The child prints its clocks for every line it reads.
CHILD = """
import sys, time
from datetime import UTC, datetime
for _ in sys.stdin:
    print(time.time(), datetime.now(UTC).timestamp(), time.monotonic(), flush=True)
"""


@pytest.fixture
def library() -> Path:
    found = clockjump.find_library()
    if found is None:
        pytest.skip(clockjump.MISSING)
    return found


class Child:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def clocks(self) -> tuple[float, float, float]:
        """The child's (time.time() - ours, datetime.now() - ours, monotonic - ours)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        wall, now, mono = (float(x) for x in line.split())
        return wall - time.time(), now - datetime.now(UTC).timestamp(), mono - time.monotonic()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[list[Child]]:
    children: list[Child] = []
    yield children
    for child in children:
        child.stop()


def test_the_wall_clock_follows_the_offset_file_and_monotonic_stays_real(
    library: Path, tmp_path: Path, spawn: list[Child]
) -> None:
    clocks = clockjump.Clocks(tmp_path, enabled=True)
    assert clocks.library == library
    assert not clocks.unavailable
    env = clocks.env("op-a")
    assert "FAKETIME" not in env  # it would take precedence over the file
    assert clocks.offset_file("op-a").read_text() == "+0\n"
    jumped = Child(env)
    control = Child(clocks.env("op-b"))  # preloaded too, its file says +0
    spawn.extend([jumped, control])

    def near(value: float, expected: float) -> bool:
        return abs(value - expected) < 1.0

    for offset in (0.0, 45.0, -30.5, 0.0):
        clocks.jump("op-a", offset)
        wall, now, mono = jumped.clocks()
        assert near(wall, offset), (offset, wall)
        assert near(now, offset), (offset, now)
        assert near(mono, 0.0), (offset, mono)
        assert all(near(value, 0.0) for value in control.clocks()), offset


def test_without_the_fault_no_preload(tmp_path: Path) -> None:
    clocks = clockjump.Clocks(tmp_path, enabled=False)
    assert clocks.env("op-a") == {}
    assert "without libfaketime" in clocks.unavailable


def test_offsets_as_libfaketime_reads_them(tmp_path: Path) -> None:
    assert clockjump.offset_text(0) == "+0"
    assert clockjump.offset_text(45) == "+45.0"
    assert clockjump.offset_text(-20.04) == "-20.0"
    path = tmp_path / "clock" / "op-a.faketime"
    clockjump.write_offset(path, -61.25)
    assert path.read_text() == "-61.2\n"
    assert [p.name for p in path.parent.iterdir()] == ["op-a.faketime"]
