"""`make demo` on the local node, as a user runs it: the chart installed, the example Queue served
by its worker pods, runs with outputs in the live view, and nothing left behind after it stops.

It runs before the other node tests (file order): the node is one per machine, and this test's
demo starts and stops its own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kadence_devstack import node

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent


def test_make_demo_runs_the_examples_on_worker_pods(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log_path = tmp_path / "demo.out"
    with log_path.open("w") as log:
        demo = subprocess.Popen(
            [
                *(str(BIN / "kadence-devstack"), "demo", "--stack", "node"),
                *("--seconds", "45", "--workdir", str(workdir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code = demo.wait(timeout=800)
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)
                demo.wait(timeout=120)
    output = log_path.read_text()
    assert code == 0, output[-4000:]
    assert "Kadence is running on the local node" in output, output[-4000:]
    last = json.loads(output.strip().splitlines()[-1])
    assert last["runs_with_output"] >= 1, output[-4000:]
    # The demo stopped its node: the next `node up` would find nothing to clean.
    assert node.read_state() is None
    assert not node.NETNS_PATH.exists()
