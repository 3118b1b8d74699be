"""`make demo` as a user runs it: runs with output URIs appear, Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from .harness import BIN, kubectl_at, wait_for

pytestmark = pytest.mark.integration


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line or environment mentions ``marker`` (the demo's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            found.append(int(entry.name))
    return found


def test_demo_shows_runs_with_outputs_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = (tmp_path / "demo.out").open("w")
    demo = subprocess.Popen(
        [str(BIN / "kadence-devstack"), "demo", "--stack", "processes", "--workdir", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        kubeconfig = workdir / "kube" / "kubeconfig"
        wait_for(kubeconfig.exists, timeout=120, what="the stack's kubeconfig")

        def a_run_with_output() -> bool:
            out = kubectl_at(kubeconfig, "get", "jobs.kadence.io", "-n", "demo", "-o", "json")
            jobs = json.loads(out)["items"]
            return any(
                run.get("output")
                for job in jobs
                for run in (job.get("status") or {}).get("runs") or []
            )

        wait_for(a_run_with_output, timeout=180, interval=1, what="a run with an output URI")
        assert _processes_mentioning(str(workdir)), "the stack's processes should be running"
        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)
        log.close()
    output = (tmp_path / "demo.out").read_text()
    assert "s3://" in output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["runs_with_output"] >= 1
    leftovers = wait_for(
        lambda: not _processes_mentioning(str(workdir)) or None,
        timeout=15,
        what="no process of the demo left",
    )
    assert leftovers
