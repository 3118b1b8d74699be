"""The processes of a fault run: servers, operator replicas and workers, started and stopped.

A run starts its own servers rather than the test session's: it stops and restarts the API
server, nats-server and S3, which other tests share, and its operators would otherwise also
watch every other test's Jobs. Everything binds 127.0.0.1 on free ports (``kadence_devstack``).

:meth:`Stack.stop` stops every process the stack started, by PID, also one that failed to
start (``tests.faults.run`` calls it in a ``finally``, the fixture pattern of
``tests/conftest.py``); a restarted process is the same :class:`ManagedProcess` launched again,
so it is stopped the same way.

Operator and worker processes get ``PYTHONPATH`` pointing at this checkout, so they run its code
and not whatever checkout the virtualenv's editable install points at. They reach the API server
through :mod:`.apiproxy` (their kubeconfig names the proxy), which the ``api-errors`` fault
switches to answering 409 and 429; the run's own checks and manifests go to the API server
directly (``kube.kubeconfig``). Each worker reaches nats-server, and that proxy, through routes
of its own in :mod:`.tcpproxy` (``<worker>-nats``, ``<worker>-api``), which the
``worker-partition`` fault blackholes.

With ``nats_cluster=3`` NATS is a 3-node JetStream cluster: the operators get every node's URL,
each worker one proxy route per node (``<worker>-nats-n0`` ...), and the Queues ``replicas: 3``.
The nodes do not advertise the cluster to clients (``--no_advertise``), so a worker that
reconnects stays on its proxy routes (which ``worker-partition`` cuts) and never learns a node's
own port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3
import yaml
from minio import Minio

from kadence import constants
from kadence_devstack.kube import ADMIN_USER, KubeControlPlane, kubeconfig_dict
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_devstack.s3 import S3Server
from tests.faults import apiproxy, clockjump, tcpproxy, workload
from tests.integration import harness

REPO = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().with_name("faultapp.py")
OPERATOR_IDS = ("op-a", "op-b")
#: The operator settings of the run (besides ``harness.operator_env``'s): results are redelivered
#: to the surviving replica 10 s after one dies, not the default 60 s.
OPERATOR_EXTRA = {"KADENCE_RESULTS_ACK_WAIT": "10"}
#: Readiness lines: an operator holds its member Lease and announced its shards; a worker
#: fetches from its Queue.
OPERATOR_READY = "shards: now"
WORKER_READY = "fetching from"
START_TIMEOUT = 60.0

Say = Callable[[str], None]


def _log_since(path: Path, offset: int) -> str:
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(offset)
        return log.read(2_000_000).decode(errors="replace")
    return ""


def launch_until(proc: ManagedProcess, marker: str, *, timeout: float = START_TIMEOUT) -> None:
    """Launch ``proc`` and wait until ``marker`` appears in what it logs from now on (its log
    file is appended to across restarts, so an earlier life's line does not count)."""
    offset = proc.log_path.stat().st_size if proc.log_path.exists() else 0
    proc.launch()
    wait_logged(proc, marker, offset=offset, timeout=timeout)


def wait_logged(proc: ManagedProcess, marker: str, *, offset: int, timeout: float) -> None:
    proc.wait_ready(ready=lambda: marker in _log_since(proc.log_path, offset), timeout=timeout)


@dataclass
class Stack:
    """The servers and the Kadence processes of one run; :meth:`stop` stops them all."""

    workdir: Path
    say: Say
    kube: KubeControlPlane = field(init=False)
    nats: NatsServer = field(init=False)
    s3: S3Server = field(init=False)
    #: The operators' and workers' way to the API server.
    proxy: apiproxy.ApiProxy = field(init=False)
    #: The kubeconfig that names the proxy (admin token, the proxy's CA).
    proxy_kubeconfig: Path = field(init=False)
    #: The workers' routes to nats-server and to :attr:`proxy` (``worker-partition``).
    tcpproxy: tcpproxy.TcpProxy = field(init=False)
    operators: dict[str, ManagedProcess] = field(default_factory=dict)
    workers: dict[str, ManagedProcess] = field(default_factory=dict)
    #: Start the operators with libfaketime (:mod:`.clockjump`), for the ``clock-jump`` fault.
    clock_jumps: bool = False
    clocks: clockjump.Clocks = field(init=False)
    #: Nodes of NATS: 1 (one nats-server) or 3 (a JetStream cluster; the Queues get 3 replicas).
    nats_cluster: int = 1

    def __post_init__(self) -> None:
        self.clocks = clockjump.Clocks(self.workdir / "clocks", enabled=self.clock_jumps)
        # Not started yet; stopping a server that never started does nothing.
        self.kube = KubeControlPlane(self.workdir / "kube", with_controller_manager=False)
        if self.nats_cluster == 1:
            self.nats = NatsServer(self.workdir / "nats")
        else:
            self.nats = NatsServer(
                self.workdir / "nats", cluster_size=self.nats_cluster, no_advertise=True
            )
        self.s3 = S3Server(self.workdir / "s3")
        self.proxy = apiproxy.ApiProxy(
            workdir=self.workdir / "apiproxy", log_path=self.workdir / "logs" / "apiproxy.log"
        )
        self.proxy_kubeconfig = self.workdir / "kubeconfig-proxy"
        self.tcpproxy = tcpproxy.TcpProxy(
            workdir=self.workdir / "tcpproxy", log_path=self.workdir / "logs" / "tcpproxy.log"
        )

    def _start_proxy(self) -> None:
        self.proxy.start(
            backend=self.kube.server,
            backend_ca=self.kube.ca_file,
            ready_token=self.kube.admin_token,
        )
        config = kubeconfig_dict(
            server=self.proxy.url,
            ca_file=self.proxy.ca_file,
            user=ADMIN_USER,
            token=self.kube.admin_token,
        )
        self.proxy_kubeconfig.write_text(yaml.safe_dump(config))
        self.proxy_kubeconfig.chmod(0o600)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        nats = (
            "nats-server" if self.nats_cluster == 1 else f"a {self.nats_cluster}-node NATS cluster"
        )
        self.say(f"starting etcd + kube-apiserver (and its proxy), {nats}, S3 ...")
        self.kube.start()
        self._start_proxy()
        self.nats.start()
        if self.nats_cluster > 1:
            # A cluster answers stream creation with a timeout until it has a meta leader.
            self.nats.wait_healthy(timeout=START_TIMEOUT)
        self.s3.start()
        harness.install_crds(self.kube)
        bucket = self.minio()
        if not bucket.bucket_exists(constants.DEFAULT_OUTPUT_BUCKET):
            bucket.make_bucket(constants.DEFAULT_OUTPUT_BUCKET)

        self.say(f"starting operators {', '.join(OPERATOR_IDS)} ...")
        if self.clocks.library is not None:
            self.say(
                f"  with LD_PRELOAD={self.clocks.library}, clock offsets in {self.clocks.folder}"
            )
        for op_id in OPERATOR_IDS:
            self.operators[op_id] = ManagedProcess(
                name=f"kadence-operator {op_id}",
                argv=[str(harness.BIN / "kadence-operator")],
                log_path=self.workdir / "logs" / f"operator-{op_id}.log",
                env=self._operator_env(op_id),
            )
        self.start_operators(*OPERATOR_IDS)

        replicas = self.nats_cluster  # one copy per node: the streams outlive a node's loss
        queues = (workload.queue_manifest(q, replicas=replicas) for q in workload.QUEUES)
        harness.apply(self.kube, *queues)
        for queue in workload.QUEUES:
            harness.wait_for(
                functools.partial(self.queue_ready, queue.name),
                timeout=START_TIMEOUT,
                what=f"Queue {queue.name} Ready",
            )

        self.say(f"starting workers {', '.join(w.name for w in workload.WORKERS)} ...")
        self._start_tcpproxy()
        for plan in workload.WORKERS:
            self.workers[plan.name] = ManagedProcess(
                name=f"kadence worker {plan.name}",
                argv=[
                    sys.executable,
                    "-m",
                    "kadence",
                    "worker",
                    "--queue",
                    plan.queue,
                    "--app",
                    f"{APP}:app",
                    "--concurrency",
                    str(plan.concurrency),
                    "--metrics-port",
                    "0",
                    "--grace-period",
                    "2",
                    "--lease-duration",
                    str(workload.WORKER_LEASE_DURATION),
                    "--name",
                    plan.name,
                ],
                log_path=self.workdir / "logs" / f"worker-{plan.name}.log",
                env=self._worker_env(plan.name),
            )
        for name in self.workers:
            self.start_worker(name)

    def nats_routes(self, name: str) -> list[str]:
        """The worker's routes to NATS: ``<worker>-nats``, or one per node of a cluster."""
        if self.nats_cluster == 1:
            return [f"{name}-nats"]
        return [f"{name}-nats-{node.name}" for node in self.nats.nodes]

    def _start_tcpproxy(self) -> None:
        """Routes ``<worker>-nats`` (to nats-server's port, the same across its restarts; in a
        cluster, ``<worker>-nats-<node>`` to each node's) and ``<worker>-api`` (to :attr:`proxy`)
        per worker, and each worker's kubeconfig naming its own API route (the proxy's
        certificate is for 127.0.0.1, whatever the port)."""
        backends: dict[str, tuple[str, int]] = {}
        for plan in workload.WORKERS:
            for route, node in zip(self.nats_routes(plan.name), self.nats.nodes, strict=True):
                backends[route] = ("127.0.0.1", node.port)
            backends[f"{plan.name}-api"] = ("127.0.0.1", self.proxy.port)
        self.tcpproxy.start(backends)
        for plan in workload.WORKERS:
            config = kubeconfig_dict(
                server=f"https://127.0.0.1:{self.tcpproxy.port(f'{plan.name}-api')}",
                ca_file=self.proxy.ca_file,
                user=ADMIN_USER,
                token=self.kube.admin_token,
            )
            path = self.worker_kubeconfig(plan.name)
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)

    def worker_kubeconfig(self, name: str) -> Path:
        return self.workdir / f"kubeconfig-{name}"

    def partition_worker(self, name: str, *, api: bool) -> None:
        """Blackhole the worker's connections to nats-server (and, with ``api``, to the API
        server); :meth:`heal_partition` ends it."""
        routes = [*self.nats_routes(name), *([f"{name}-api"] if api else [])]
        self.tcpproxy.partition(*routes)

    def heal_partition(self) -> None:
        self.tcpproxy.heal()

    def _python_path(self) -> str:
        return os.pathsep.join(str(REPO / part) for part in ("worker", "operator"))

    def _operator_env(self, op_id: str) -> dict[str, str]:
        env = harness.operator_env(
            kube=self.kube, nats=self.nats, s3=self.s3, operator_id=op_id, extra=OPERATOR_EXTRA
        )
        return (
            env
            | {
                "PYTHONPATH": self._python_path(),
                "PYTHONUNBUFFERED": "1",
                "KUBECONFIG": str(self.proxy_kubeconfig),
            }
            | self.clocks.env(op_id)
        )

    def _worker_env(self, name: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": self._python_path(),
            "PYTHONUNBUFFERED": "1",
            # Its own route to nats-server (to each node), through the proxy the partition cuts.
            "KADENCE_NATS_URL": ",".join(
                f"nats://127.0.0.1:{self.tcpproxy.port(route)}" for route in self.nats_routes(name)
            ),
            "KADENCE_NAMESPACE": workload.NAMESPACE,
            "KADENCE_WORKER_NAME": name,
            "KADENCE_S3_ENDPOINT": self.s3.endpoint,
            "KADENCE_S3_ACCESS_KEY": self.s3.access_key,
            "KADENCE_S3_SECRET_KEY": self.s3.secret_key,
            "KADENCE_S3_SECURE": "false",
            # Job Leases (Forbid, BufferOne, Replace), through its route to the proxy.
            "KUBECONFIG": str(self.worker_kubeconfig(name)),
        }

    # -- processes, for the faults ------------------------------------------------------------

    def start_operators(self, *ids: str) -> None:
        """Launch these replicas together, then wait for each (they split the shards)."""
        offsets = {}
        for op_id in ids:
            proc = self.operators[op_id]
            offsets[op_id] = proc.log_path.stat().st_size if proc.log_path.exists() else 0
            proc.launch()
        for op_id in ids:
            wait_logged(
                self.operators[op_id],
                OPERATOR_READY,
                offset=offsets[op_id],
                timeout=START_TIMEOUT,
            )

    def start_worker(self, name: str) -> None:
        launch_until(self.workers[name], WORKER_READY)

    def nats_node(self, name: str) -> int:
        """The index of the NATS node called ``name`` (``n0``, ``n1``, ...)."""
        return next(i for i, node in enumerate(self.nats.nodes) if node.name == name)

    def restart_nats(self, *indices: int) -> str:
        """Start these stopped NATS nodes again (same ports and store), together, and wait until
        each has JetStream up; in a cluster, then until each is healthy (``/healthz``: a meta
        leader, its streams and consumers current). Empty, or why one is not healthy yet."""
        if self.nats_cluster == 1:
            self.nats.restart_node(0)
            return ""
        nodes = [self.nats.nodes[i] for i in indices]
        for node in nodes:  # together: a node waits for a quorum
            node.process.launch()
        for node in nodes:
            ready = functools.partial(_jetstream_up, node.monitor_port)
            node.process.wait_ready(ready=ready, timeout=START_TIMEOUT)
        try:
            self.nats.wait_healthy(timeout=START_TIMEOUT, nodes=list(indices))
        except TimeoutError as error:
            return str(error)
        return ""

    def nats_leaders(self) -> dict[str, str]:
        """Each raft group's leader as a running node sees it: ``meta``, ``<stream>`` and
        ``<stream>/<consumer>`` -> node name (empty while it has none). Empty when no node answers
        (it is only reported)."""
        for node in self.nats.nodes:
            if not node.process.running:
                continue
            try:
                answer = requests.get(
                    f"http://127.0.0.1:{node.monitor_port}/jsz",
                    params={"accounts": "true", "streams": "true", "consumers": "true"},
                    timeout=2,
                )
                answer.raise_for_status()
                body = answer.json()
            except (requests.RequestException, ValueError):
                continue
            leaders = {"meta": (body.get("meta_cluster") or {}).get("leader", "")}
            for account in body.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    leaders[stream["name"]] = (stream.get("cluster") or {}).get("leader", "")
                    for consumer in stream.get("consumer_detail") or []:
                        group = f"{stream['name']}/{consumer['name']}"
                        leaders[group] = (consumer.get("cluster") or {}).get("leader", "")
            return leaders
        return {}

    def apiserver(self) -> ManagedProcess:
        return next(p for p in self.kube.processes if p.name == "kube-apiserver")

    def api_ready(self) -> bool:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        answer = requests.get(
            f"{self.kube.server}/readyz",
            headers={"Authorization": f"Bearer {self.kube.admin_token}"},
            verify=str(self.kube.ca_file),
            timeout=2,
        )
        return answer.ok

    def start_apiserver(self) -> None:
        """Start the stopped kube-apiserver again: same flags, ports, certificates and etcd, so
        every kubeconfig stays valid."""
        self.apiserver().start(ready=self.api_ready, timeout=START_TIMEOUT)

    def minio(self) -> Minio:
        return Minio(
            self.s3.endpoint,
            access_key=self.s3.access_key,
            secret_key=self.s3.secret_key,
            secure=False,
        )

    def queue_ready(self, name: str) -> bool:
        body = harness.get(self.kube, "queue", name, workload.NAMESPACE)
        return (harness.condition(body, "Ready") or {}).get("status") == "True"

    # -- the end --------------------------------------------------------------------------------

    def processes(self) -> list[ManagedProcess]:
        found = [*self.workers.values(), *self.operators.values()]
        if self.tcpproxy.process is not None:
            found.append(self.tcpproxy.process)
        if self.proxy.process is not None:
            found.append(self.proxy.process)
        if self.s3.process is not None:
            found.append(self.s3.process)
        found.extend(n.process for n in self.nats.nodes)
        found.extend(self.kube.processes)
        return found

    def save_logs(self, dest: Path) -> None:
        """Copy every process's log to ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        for proc in self.processes():
            if proc.log_path.exists():
                safe = proc.name.replace(" ", "-").replace("(", "").replace(")", "")
                shutil.copy(proc.log_path, dest / f"{safe}.log")

    def stop(self) -> None:
        """Stop everything, workers first, by PID; a failure to stop one does not skip the rest.
        A SIGSTOPped process is continued first (``ManagedProcess.stop`` sends SIGCONT)."""
        stops: list[Callable[[], None]] = [
            *(p.stop for p in self.workers.values()),
            *(p.stop for p in self.operators.values()),
            self.tcpproxy.stop,
            self.proxy.stop,
            self.s3.stop,
            self.nats.stop,
            self.kube.stop,
        ]
        for stop in stops:
            try:
                stop()
            except Exception as error:  # keep stopping the others
                self.say(f"stopping: {type(error).__name__}: {error}")


def _jetstream_up(monitor_port: int) -> bool:
    """JetStream is enabled on the node (what ``NatsServer.start`` waits for)."""
    url = f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
    return requests.get(url, timeout=1).ok


def freeze(proc: ManagedProcess) -> None:
    proc.signal(signal.SIGSTOP)


def thaw(proc: ManagedProcess) -> None:
    proc.signal(signal.SIGCONT)
