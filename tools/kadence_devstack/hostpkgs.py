"""Distribution packages the local node and the image builds need, installed when missing.

For: finding the commands a real node needs (runc, the CNI plugins, iptables, buildah, mmdebstrap…)
and, as root on a Debian-like machine, installing the packages that carry the missing ones with
``apt-get`` — the project's own files install what its servers need, nothing by hand. Not for:
Go-built binaries (:mod:`kadence_devstack.binaries`) or PyPI wheels (the virtualenv).

Elsewhere (not root, no apt-get) it raises :class:`SetupError` with one line naming what is
missing and which packages carry it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from kadence_devstack.procs import SetupError, heartbeat

# A command (or a file) the node needs -> the Debian package that carries it.
NODE_PACKAGES: Mapping[str, str] = {
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "mount": "mount",
}
# What building the images needs (a daemonless builder and a root file system from packages).
IMAGE_PACKAGES: Mapping[str, str] = {
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
}


def _present(what: str) -> bool:
    return Path(what).exists() if what.startswith("/") else shutil.which(what) is not None


def missing(requirements: Mapping[str, str]) -> dict[str, str]:
    """The requirements (command or path -> package) not found on this machine. Reads only."""
    return {what: pkg for what, pkg in requirements.items() if not _present(what)}


def missing_message(absent: Mapping[str, str]) -> str:
    """One line naming what is missing and the packages that carry it. Pure."""
    packages = sorted(set(absent.values()))
    return (
        f"missing for the local node: {', '.join(sorted(absent))} — install the packages "
        f"{' '.join(packages)} (as root: apt-get install {' '.join(packages)})"
    )


def _say(message: str) -> None:
    print(f"[kadence-devstack] {message}", file=sys.stderr, flush=True)


def ensure(requirements: Mapping[str, str]) -> None:
    """Install the packages carrying whatever of ``requirements`` is missing (root + apt-get), or
    raise :class:`SetupError` saying what to install."""
    absent = missing(requirements)
    if not absent:
        return
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise SetupError(missing_message(absent))
    packages = sorted(set(absent.values()))
    _say(f"installing {' '.join(packages)} with apt-get (once per machine) …")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Debian's maintainer scripts must not start daemons (containerd's would) on this machine.
    policy = Path("/usr/sbin/policy-rc.d")
    wrote_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        wrote_policy = True
    started = time.monotonic()
    try:
        with heartbeat(_say, lambda t: f"  still installing ({t:.0f}s)"):
            for argv in (
                [apt, "update", "-q"],
                [apt, "install", "-y", "-q", "--no-install-recommends", *packages],
            ):
                result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise SetupError(
                        f"`{' '.join(argv)}` failed (exit {result.returncode}): "
                        + " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
                    )
    finally:
        if wrote_policy:
            policy.unlink(missing_ok=True)
    still = missing(requirements)
    if still:
        raise SetupError(missing_message(still))
    _say(f"installed {' '.join(packages)} in {time.monotonic() - started:.0f}s")
