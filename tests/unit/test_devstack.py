"""Set-up errors are one clear line; a server that dies shows its log tail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess, SetupError, StartError


def test_no_go_and_no_assets_says_which_to_provide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KADENCE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(SetupError) as info:
        binaries.control_plane()
    message = str(info.value)
    assert "\n" not in message
    assert "install Go" in message
    assert "KUBEBUILDER_ASSETS" in message


def test_assets_folder_missing_binaries_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etcd").write_text("")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(SetupError, match="lacks kube-apiserver"):
        binaries.control_plane()


def test_versions_come_from_the_pinned_go_modules() -> None:
    assert binaries.kubernetes_version().startswith(("v1.35.", "v1.36."))
    assert binaries.etcd_version().startswith("v3.6.")


def test_server_that_exits_shows_its_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="broken-server",
        argv=[sys.executable, "-c", "print('listening failed: port in use'); raise SystemExit(3)"],
        log_path=tmp_path / "broken.log",
    )
    with pytest.raises(StartError) as info:
        proc.start(ready=lambda: False, timeout=10)
    assert "exited with code 3" in str(info.value)
    assert "listening failed: port in use" in str(info.value)


def test_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="slow-server",
        argv=[sys.executable, "-c", "import time; print('warming up', flush=True); time.sleep(60)"],
        log_path=tmp_path / "slow.log",
    )
    with pytest.raises(StartError) as info:
        proc.start(ready=lambda: False, timeout=1)
    assert "not ready after 1s" in str(info.value)
    assert "warming up" in str(info.value)
    assert not proc.running
