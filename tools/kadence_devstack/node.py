"""A real single-node Kubernetes on this machine, in a network namespace with no link out.

For: ``kadence-devstack node up|down``, the e2e fixture and ``make demo`` — the users' path
(``helm install``, worker pods, Services, DNS) on the Kubernetes version we pin. etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy come from the
pinned ``k8s.io/kubernetes`` module, containerd (with its runc shim), crictl and CoreDNS from their
Go modules (:mod:`kadence_devstack.binaries`); runc, the CNI plugins and iptables from the
distribution (:mod:`kadence_devstack.hostpkgs`); the images from our Dockerfiles
(:mod:`kadence_devstack.images`). Not for: the loopback-only control plane the integration tests
use (:mod:`kadence_devstack.kube`).

Why one module of ~880 lines (a development tool, not shipped): bringing the node up and taking it
down are one sequence over one recorded state (``/run/kadence-node/state.json``: every PID, mount
and cgroup), and ``down`` must undo exactly what ``up`` did, also after a crash half-way; keeping
both halves side by side is what makes that checkable by reading.

The node's network: a namespace ``kadence-node`` holding a bridge without ports that carries the
node IP, the pods' CNI bridge, kube-proxy's iptables rules and CoreDNS on the node IP. Nothing is
routed out of it. The host reaches the API server through a relay on 127.0.0.1
(:mod:`kadence_devstack.relay`), and any Service through :meth:`LocalNode.forward`.

Every process is started with its PID recorded in ``/run/kadence-node/state.json`` and stopped by
that PID — also by ``node down`` from another shell after a crash; mounts, cgroups and the
namespace are removed on stop. A second ``up`` while one runs is refused.

This kind of VM needs (each was a failure until set, see docs/development.md): cgroup v1 allowed
(``failCgroupV1: false``), the ``cgroupfs`` driver, no negative ``oom_score_adj`` anywhere
(containerd ``restrict_oom_score_adj``, kubelet and kube-proxy ``oomScoreAdj: 0``), a local pause
image pinned as the sandbox image, and ``nsenter --net`` rather than ``ip netns exec`` (which
remounts /sys and hides the cgroup mounts from kubelet).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kadence_devstack import binaries, hostpkgs, images, pki
from kadence_devstack.kube import ADMIN_USER, kubeconfig_dict
from kadence_devstack.procs import ManagedProcess, SetupError, StartError, free_port, tail

NETNS = "kadence-node"
NETNS_PATH = Path("/run/netns") / NETNS
NODE_NAME = "kadence-node"
BRIDGE = "kadence0"
NODE_IP = "10.213.0.2"
NODE_PREFIX = 24
POD_SUBNET = "10.214.0.0/24"
SERVICE_RANGE = "10.215.0.0/16"
KUBERNETES_SERVICE_IP = "10.215.0.1"
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
RUN_DIR = Path("/run/kadence-node")
STATE_FILE = RUN_DIR / "state.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Stop order: the kubelet first (so nothing restarts pods), the API server's clients before it.
STOP_ORDER = (
    "kubelet",
    "kube-proxy",
    "coredns",
    "kube-scheduler",
    "kube-controller-manager",
    "containerd",
    "relay",
    "kube-apiserver",
    "etcd",
)

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[kadence-devstack] {message}", file=sys.stderr, flush=True)


def in_netns(argv: list[str]) -> list[str]:
    """``argv`` run inside the node's network namespace. ``nsenter --net`` execs the program, so
    the PID we record is the program's. Pure."""
    return ["nsenter", f"--net={NETNS_PATH}", "--", *argv]


def unavailable_reason() -> str | None:
    """Why a local node cannot start on this machine (one line), or None. Installs nothing."""
    if sys.platform != "linux":
        return "the local node needs Linux"
    if os.geteuid() != 0:
        return "the local node needs root (it makes a network namespace, mounts and cgroups)"
    if not (CGROUP_ROOT / "pids").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").is_file():
        return f"no cgroup hierarchy under {CGROUP_ROOT}"
    if shutil.which("go") is None and not binaries.node_binaries_cached():
        return "the local node's binaries are built with Go: install Go >= 1.25"
    absent = hostpkgs.missing({**hostpkgs.NODE_PACKAGES, **hostpkgs.IMAGE_PACKAGES})
    if absent and shutil.which("apt-get") is None:
        return hostpkgs.missing_message(absent)
    return None


# --- pure configuration --------------------------------------------------------------------------


def containerd_config(*, workdir: Path, sandbox_image: str) -> str:
    """containerd 2.x (config version 3) for the node. Pure."""
    root = workdir / "containerd"
    return f"""version = 3
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{root / "containerd.sock"}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj fails every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{workdir / "cni"}"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
"""


def cni_config() -> dict[str, Any]:
    """The pods' network: one bridge with the node's pod subnet, hairpin for a pod reaching itself
    through a Service, no masquerade (nothing leaves the node). Pure."""
    return {
        "cniVersion": "1.0.0",
        "name": "kadence",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(*, workdir: Path) -> dict[str, Any]:
    """KubeletConfiguration for this kind of VM. Pure."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{workdir / 'containerd' / 'containerd.sock'}",
        "address": NODE_IP,
        "readOnlyPort": 0,
        # Only the API server (inside the node's namespace) reaches the kubelet.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(workdir / "resolv.conf"),
        "podLogsDir": str(workdir / "pod-logs"),
        "serializeImagePulls": False,
        # Our images are imported, never pulled: garbage collection must not drop them, and a
        # busy shared disk must not evict the test's pods.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "maxPods": 60,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(*, kubeconfig: Path) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode, no sysctl writes beyond the namespace's. Pure."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": POD_SUBNET,
        "hostnameOverride": NODE_NAME,
        "oomScoreAdj": 0,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # nf_conntrack_max is global to the machine: leave it alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def corefile(*, kubeconfig: Path) -> str:
    """CoreDNS on the node IP: cluster names only, nothing forwarded out. Pure."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} kadence
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 10
    loop
}}
"""


# --- certificates --------------------------------------------------------------------------------


def _write_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and an API server serving certificate for every name the node's clients use: the
    node IP (kubelet, CoreDNS), 127.0.0.1 (the host's relay), the ``kubernetes`` Service (pods);
    and the ServiceAccount signing key pair (``sa.key``, ``sa.pub``, RSA).
    Returns (ca.crt, apiserver.crt, apiserver.key)."""
    files = pki.write_server_certificate(
        folder,
        ca_name="kadence-node-ca",
        common_name="kube-apiserver",
        dns_names=(
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "localhost",
        ),
        ip_addresses=(NODE_IP, "127.0.0.1", KUBERNETES_SERVICE_IP),
        name="apiserver",
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_file = folder / "sa.key"
    sa_file.write_bytes(
        sa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    sa_file.chmod(0o600)
    (folder / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files.ca, files.cert, files.key


# --- host plumbing -------------------------------------------------------------------------------


def _run(
    argv: list[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise StartError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )
    return result


def _make_netns() -> None:
    """The node's namespace: loopback, a port-less bridge with the node IP and a default route
    onto it (the route lookup for Service IPs needs one; the bridge has no ports, so nothing
    leaves), forwarding and bridged traffic through iptables for kube-proxy."""
    _run(["ip", "netns", "add", NETNS])
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
        ["ip", "route", "add", "default", "dev", BRIDGE],
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
        ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
    ):
        _run(in_netns(argv))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads, wait up to ``grace`` seconds, then SIGKILL."""
    if not _pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGCONT)
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _cgroup_dirs() -> list[Path]:
    """Every ``kubepods`` cgroup folder of the node, deepest first (to rmdir in that order)."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            found += [Path(p) for p, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in_cgroups() -> set[int]:
    pids: set[int] = set()
    for folder in _cgroup_dirs():
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in (folder / "cgroup.procs").read_text().split()}
    return pids


def _shim_pids(address: Path) -> set[int]:
    """containerd's shims daemonize away from its process group: find ours by their address."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and (str(address).encode() in cmdline)
            ):
                pids.add(int(entry.name))
    return pids


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points below ``roots``, deepest first."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


# --- the node ------------------------------------------------------------------------------------


@dataclass
class LocalNode:
    """A running single-node cluster rooted at ``workdir`` (data, logs, kubeconfigs)."""

    workdir: Path
    say: Say = _say
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    kubeconfig: Path = Path()
    api_port: int = 0
    images: dict[str, images.Image] = field(default_factory=dict)
    _relays: list[ManagedProcess] = field(default_factory=list)

    # -- lifecycle

    def up(self, *, timeout: float = 180) -> None:
        """Build or find everything, start the node and wait until it is Ready. On failure,
        everything started is stopped again and the error names the component with its log."""
        reason = unavailable_reason()
        if reason is not None:
            raise SetupError(reason)
        running = read_state()
        if running is not None and any(_pid_alive(p) for p in running.get("pids", {}).values()):
            raise SetupError(
                f"a local node is already running (workdir {running.get('workdir')}); "
                f"stop it with `kadence-devstack node down` first"
            )
        if running is not None or NETNS_PATH.exists():
            self.say("cleaning up what a previous node left behind …")
            down()
        hostpkgs.ensure({**hostpkgs.NODE_PACKAGES, **hostpkgs.IMAGE_PACKAGES})
        bins = binaries.control_plane()
        node_bins = binaries.node_binaries()
        self.images = images.build_all(say=self.say)
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self._save_state()  # from here on `node down` can clean up after us
        try:
            self._start(bins, node_bins, timeout=timeout)
        except BaseException:
            self.down()
            raise
        self.say(f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")

    def _start(
        self,
        bins: binaries.ControlPlaneBinaries,
        node_bins: binaries.NodeBinaries,
        *,
        timeout: float,
    ) -> None:
        work = self.workdir
        logs = work / "logs"
        _make_netns()
        ca_file, cert_file, key_file = _write_pki(work / "pki")
        token = secrets.token_hex(24)
        tokens = work / "tokens.csv"
        tokens.write_text(f"{token},{ADMIN_USER},{ADMIN_USER},system:masters\n")
        tokens.chmod(0o600)
        in_node = work / "kubeconfig-in-node"
        self._write_kubeconfig(in_node, f"https://{NODE_IP}:{API_PORT}", ca_file, token)
        (work / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
        (work / "pod-logs").mkdir(exist_ok=True)
        cni = work / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-kadence.conflist").write_text(json.dumps(cni_config(), indent=2))
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [*(str(d) for d in node_bins.path_dirs), "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        )

        # containerd first: importing the images overlaps the control plane's start.
        (work / "containerd").mkdir(exist_ok=True)
        containerd_toml = work / "containerd" / "config.toml"
        containerd_toml.write_text(
            containerd_config(workdir=work, sandbox_image=self.images["pause"].ref)
        )
        socket_path = work / "containerd" / "containerd.sock"
        self._launch(
            "containerd",
            [str(node_bins.containerd), "--config", str(containerd_toml)],
            logs,
            env,
            ready=socket_path.exists,
            timeout=60,
        )
        # `ctr images import` reads one archive per call; they run while the control plane
        # starts.
        archives = [image.archive for key, image in self.images.items() if key != "base"]
        importer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        imported = importer.submit(
            lambda: [
                _run(
                    [
                        *(str(node_bins.ctr), "--address", str(socket_path), "-n", "k8s.io"),
                        *("images", "import", str(archive)),
                    ],
                    timeout=600,
                )
                for archive in archives
            ]
        )
        importer.shutdown(wait=False)

        etcd_port = 2379
        self._launch(
            "etcd",
            [
                str(bins.etcd),
                "--name=kadence-node",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=kadence-node=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs,
            env,
        )
        pki = work / "pki"
        self._launch(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                f"--tls-cert-file={cert_file}",
                f"--tls-private-key-file={key_file}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",
                "--kubelet-preferred-address-types=InternalIP",
                "--v=1",
            ],
            logs,
            env,
        )
        self.api_port = free_port()
        relay = self._relay({self.api_port: (NODE_IP, API_PORT)}, logs / "relay-api.log")
        self.processes["relay"] = relay
        self.kubeconfig = work / "kubeconfig"
        self._write_kubeconfig(
            self.kubeconfig, f"https://127.0.0.1:{self.api_port}", ca_file, token
        )
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        headers = {"Authorization": f"Bearer {token}"}
        self._token = token
        self._ca = ca_file
        self.processes["kube-apiserver"].wait_ready(
            ready=lambda: (
                requests.get(
                    f"https://127.0.0.1:{self.api_port}/readyz",
                    headers=headers,
                    verify=str(ca_file),
                    timeout=2,
                ).ok
            ),
            timeout=timeout,
        )
        self._save_state()

        self._launch(
            "kube-controller-manager",
            [
                str(bins.kube_controller_manager),
                f"--kubeconfig={in_node}",
                f"--authentication-kubeconfig={in_node}",
                f"--authorization-kubeconfig={in_node}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={ca_file}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
            logs,
            env,
        )
        self._launch(
            "kube-scheduler",
            [
                str(node_bins.kube_scheduler),
                f"--kubeconfig={in_node}",
                f"--authentication-kubeconfig={in_node}",
                f"--authorization-kubeconfig={in_node}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ],
            logs,
            env,
        )
        imported.result(timeout=900)  # raises the failing import's StartError

        kubelet_yaml = work / "kubelet.yaml"
        kubelet_yaml.write_text(yaml.safe_dump(kubelet_config(workdir=work)))
        self._launch(
            "kubelet",
            [
                str(node_bins.kubelet),
                f"--config={kubelet_yaml}",
                f"--kubeconfig={in_node}",
                f"--root-dir={work / 'kubelet'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            logs,
            env,
        )
        proxy_yaml = work / "kube-proxy.yaml"
        proxy_yaml.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig=in_node)))
        self._launch("kube-proxy", [str(node_bins.kube_proxy), f"--config={proxy_yaml}"], logs, env)
        corefile_path = work / "Corefile"
        corefile_path.write_text(corefile(kubeconfig=in_node))
        self._launch("coredns", [str(node_bins.coredns), "-conf", str(corefile_path)], logs, env)
        self._save_state()
        self.wait_until("the node to be Ready", self._node_ready, timeout=timeout)
        self.wait_until(
            "the default ServiceAccount",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            timeout=timeout,
        )

    def _launch(
        self,
        name: str,
        argv: list[str],
        logs: Path,
        env: dict[str, str],
        *,
        ready: Callable[[], bool] | None = None,
        timeout: float = 60,
    ) -> ManagedProcess:
        proc = ManagedProcess(
            name=name, argv=in_netns(argv), log_path=logs / f"{name}.log", env=env
        )
        self.processes[name] = proc
        proc.launch()
        self._save_state()
        if ready is not None:
            proc.wait_ready(ready=ready, timeout=timeout)
        return proc

    def _relay(self, forwards: dict[int, tuple[str, int]], log_path: Path) -> ManagedProcess:
        argv = [sys.executable, "-m", "kadence_devstack.relay", "--netns", str(NETNS_PATH)]
        argv += [f"127.0.0.1:{port}={host}:{target}" for port, (host, target) in forwards.items()]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = ManagedProcess(name="relay", argv=argv, log_path=log_path, env=env)
        proc.start(ready=lambda: "ready" in proc.log_tail(5), timeout=30)
        return proc

    def forward(self, host: str, port: int) -> int:
        """A loopback port on the host that reaches ``host:port`` inside the node (a pod IP, or a
        Service's cluster IP through kube-proxy); stopped with the node."""
        local = free_port()
        relay = self._relay({local: (host, port)}, self.workdir / "logs" / f"relay-{local}.log")
        self._relays.append(relay)
        self._save_state()
        return local

    def tag_image(self, source: str, target: str) -> None:
        """Give an imported image another name in the node's containerd (e.g. to roll a
        Deployment to a "new" image without rebuilding)."""
        socket_path = self.workdir / "containerd" / "containerd.sock"
        ctr = binaries.node_binaries().ctr
        _run(
            [
                str(ctr),
                "--address",
                str(socket_path),
                "-n",
                "k8s.io",
                "images",
                "tag",
                source,
                target,
            ]
        )

    def down(self) -> None:
        """Stop everything this node started and remove what it left (see :func:`down`)."""
        for relay in self._relays:
            relay.stop(grace=2)
        self._relays.clear()
        kubelet = self.processes.get("kubelet")
        if kubelet is not None:
            kubelet.stop(grace=5)
        down(say=self.say)
        for proc in self.processes.values():
            proc.stop(grace=1)  # reaps our children; their PIDs were stopped by down()
        self.processes.clear()

    # -- state

    def _save_state(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        pids = {name: p.pid for name, p in self.processes.items() if p.pid is not None}
        for index, relay in enumerate(self._relays):
            if relay.pid is not None:
                pids[f"relay-{index}"] = relay.pid
        state = {
            "workdir": str(self.workdir),
            "pids": pids,
            "kubeconfig": str(self.kubeconfig),
            "started_by": os.getpid(),
        }
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(STATE_FILE)

    # -- the API

    def _write_kubeconfig(self, path: Path, server: str, ca_file: Path, token: str) -> None:
        config = kubeconfig_dict(server=server, ca_file=ca_file, user=ADMIN_USER, token=token)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _get(self, path: str) -> dict[str, Any] | None:
        response = requests.get(
            f"https://127.0.0.1:{self.api_port}{path}",
            headers={"Authorization": f"Bearer {self._token}"},
            verify=str(self._ca),
            timeout=5,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_until(self, what: str, check: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``check`` (errors count as not yet) until it holds; a component that exits or a
        timeout raises :class:`StartError` with the logs that say why."""
        started = time.monotonic()
        said = started
        while True:
            for name, proc in self.processes.items():
                if proc.pid is not None and not proc.running:
                    raise StartError(
                        f"{name} exited while waiting for {what} (log: {proc.log_path}):\n"
                        f"{tail(proc.log_path)}"
                    )
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() - started > timeout:
                kubelet = self.processes.get("kubelet")
                raise StartError(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f"; kubelet log:\n{tail(kubelet.log_path, 30)}" if kubelet else "")
                )
            if time.monotonic() - said >= 30:
                self.say(f"  still waiting for {what} ({time.monotonic() - started:.0f}s)")
                said = time.monotonic()
            time.sleep(0.5)


def read_state() -> dict[str, Any] | None:
    """The running (or crashed) node's record, or None."""
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    return state


def _kill_pods(workdir: Path) -> None:
    """SIGKILL every container process (by the PIDs in the node's cgroups) and our shims."""
    for _ in range(3):
        pids = _pids_in_cgroups() | _shim_pids(workdir / "containerd" / "containerd.sock")
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)


def down(*, say: Say = _say) -> bool:
    """Stop the node recorded in the state file by its PIDs and remove its mounts, cgroups and
    namespace. Safe to call when nothing runs, and after a crash. True when there was a node."""
    state = read_state()
    workdir = Path(state["workdir"]) if state else None
    pids: dict[str, int] = dict(state.get("pids", {})) if state else {}
    if state is None and not NETNS_PATH.exists():
        return False
    if "kubelet" in pids:
        stop_pid(pids.pop("kubelet"), grace=5)
    if workdir is not None:
        _kill_pods(workdir)
    for name in STOP_ORDER:
        if name in pids:
            stop_pid(pids.pop(name), grace=10)
    for pid in pids.values():  # relays for forwarded Services
        stop_pid(pid, grace=2)
    if workdir is not None:
        _kill_pods(workdir)
        for point in _mounts_under(workdir):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for folder in _cgroup_dirs():
        with contextlib.suppress(OSError):
            folder.rmdir()
    if NETNS_PATH.exists():
        _run(["ip", "netns", "delete", NETNS], check=False)
    STATE_FILE.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def running(workdir: Path, *, say: Say = _say) -> Iterator[LocalNode]:
    """A node for the length of a ``with`` block (the pytest fixture's form)."""
    node = LocalNode(workdir, say=say)
    node.up()
    try:
        yield node
    finally:
        node.down()
