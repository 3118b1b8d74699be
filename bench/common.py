"""Shared parts of the benchmarks: the servers, the operator processes, Job creation, and
measurements read from /proc, the operator's /metrics endpoint and the JetStream streams.

Every benchmark starts its own servers with :mod:`kadence_devstack` on loopback in a temporary
folder (etcd + kube-apiserver, one nats-server; no S3: nothing writes outputs), runs
``kadence-operator`` as a process, and stops everything on exit, also on Ctrl-C or failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from kubernetes import client, config

from kadence import constants
from kadence.protocol import RunRequest, decode_run
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        "?",
    )
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    return {
        "cpus": os.cpu_count(),
        "model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
    }


# ------------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


#: Operator settings a benchmark passes on from its own environment, for A/B runs.
AB_SETTINGS = (
    "KADENCE_EVENT_LOOP",
    "KADENCE_DISPATCH_QUIET",
    "KADENCE_DISPATCH_STAGE",
    # Only operators before issue 26 read it (they could send JetStream fast batches).
    "KADENCE_DISPATCH_FAST_BATCH",
)


def machine_ticks() -> list[int]:
    """The machine's CPU time so far, in clock ticks: ``/proc/stat``'s ``cpu`` line (user, nice,
    system, idle, iowait, irq, softirq, steal, ...)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def machine_cores(before: list[int], after: list[int], seconds: float) -> dict[str, float]:
    """Cores busy, stolen by the hypervisor and idle between two :func:`machine_ticks`."""
    tick = os.sysconf("SC_CLK_TCK")
    delta = [b - a for a, b in zip(before, after, strict=True)]
    idle = delta[3] + delta[4]
    steal = delta[7] if len(delta) > 7 else 0
    busy = sum(delta[:8]) - idle - steal

    def cores(ticks: int) -> float:
        return round(ticks / tick / seconds, 3)

    return {"busy": cores(busy), "steal": cores(steal), "idle": cores(idle)}


@dataclass
class CpuMeter:
    """CPU use of several processes over a window: ``start()``, then ``stop()`` → cores used."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    _machine: list[int] = field(default_factory=list)
    #: The whole machine's cores over the last window (busy, stolen, idle), set by ``stop()``.
    machine: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine = machine_ticks()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        self.machine = machine_cores(self._machine, machine_ticks(), elapsed)
        return {
            name: round((cpu_seconds(pid) - self._start[name]) / elapsed, 3)
            for name, pid in self.pids.items()
        }


# ------------------------------------------------------------------------------------ servers


@dataclass
class Stack:
    workdir: Path
    kube: KubeControlPlane
    nats: NatsServer
    api: client.ApiClient
    operators: dict[str, ManagedProcess] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: Other processes of the benchmark (the sink): stopped with the servers, also when the
    #: benchmark fails or is interrupted.
    helpers: list[ManagedProcess] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        found = {p.name: p.pid for p in self.kube.processes if p.pid}
        for i, node in enumerate(self.nats.nodes):
            if node.process.pid:
                found["nats-server" if i == 0 else f"nats-server-{i}"] = node.process.pid
        return {k: v for k, v in found.items() if v}

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(self.kube.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start_operator(self, op_id: str, **env: str) -> ManagedProcess:
        port = free_port()
        variables = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.kube.kubeconfig),
            "KADENCE_NATS_URL": self.nats.url,
            "KADENCE_OPERATOR_NAMESPACE": "kadence-system",
            "KADENCE_OPERATOR_ID": op_id,
            "KADENCE_METRICS_PORT": str(port),
            # A/B runs: e.g. KADENCE_EVENT_LOOP=asyncio or KADENCE_DISPATCH_STAGE=0 in the
            # bench's environment reach the operator.
            **{k: v for k, v in os.environ.items() if k in AB_SETTINGS},
            **env,
        }
        if source := os.environ.get("KADENCE_BENCH_OPERATOR_PYTHONPATH"):
            # A/B of two commits: the operator imports another checkout's code, e.g.
            # <checkout>/worker:<checkout>/operator of a `git worktree`.
            variables["PYTHONPATH"] = source
        proc = ManagedProcess(
            name=f"operator {op_id}",
            argv=[str(BIN / "kadence-operator")],
            log_path=self.workdir / f"{op_id}.log",
            env=variables,
        )
        proc.start(ready=lambda: "shards: now" in proc.log_tail(400), timeout=120)
        self.operators[op_id] = proc
        self.metrics_ports[op_id] = port
        return proc

    def scrape(self, op_id: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_ports[op_id]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())


@contextlib.contextmanager
def stack(name: str, *, keep: bool = False) -> Iterator[Stack]:
    """etcd + kube-apiserver (no controller manager) and one nats-server, CRDs installed."""
    workdir = Path(tempfile.mkdtemp(prefix=f"kadence-bench-{name}-"))
    kube = KubeControlPlane(workdir / "kube", with_controller_manager=False)
    server = NatsServer(workdir / "nats")
    running: Stack | None = None
    try:
        say(f"starting servers in {workdir}")
        kube.start()
        server.start()
        api = config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
        api.configuration.connection_pool_maxsize = 32
        running = Stack(workdir=workdir, kube=kube, nats=server, api=api)
        running.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("jobs.kadence.io", "queues.kadence.io"):
            running.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        running.kubectl("create", "namespace", "kadence-system")
        running.kubectl("create", "namespace", "bench")
        yield running
    finally:
        if running is not None:
            for proc in [*running.helpers, *running.operators.values()]:
                proc.stop()
        server.stop()
        kube.stop()
        if keep or os.environ.get("KADENCE_BENCH_KEEP"):
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        say("servers stopped")


# ------------------------------------------------------------------------------------ objects


def create_queue(st: Stack, name: str, *, partitions: int = 4) -> None:
    body = {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"partitions": partitions},
    }
    client.CustomObjectsApi(st.api).create_namespaced_custom_object(
        "kadence.io", "v1alpha1", "bench", "queues", body
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got: Any = client.CustomObjectsApi(st.api).get_namespaced_custom_object(
            "kadence.io", "v1alpha1", "bench", "queues", name
        )
        conditions = (got.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.5)
    raise RuntimeError(f"Queue {name} not Ready")


def create_jobs(st: Stack, names: list[str], spec: dict[str, Any], *, threads: int = 16) -> float:
    """Create one Job per name with ``spec``; returns the seconds it took."""
    api = client.CustomObjectsApi(st.api)

    def create(name: str) -> None:
        body = {
            "apiVersion": "kadence.io/v1alpha1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": spec,
        }
        api.create_namespaced_custom_object("kadence.io", "v1alpha1", "bench", "jobs", body)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    return time.monotonic() - started


def list_jobs(st: Stack) -> list[dict[str, Any]]:
    got: Any = client.CustomObjectsApi(st.api).list_namespaced_custom_object(
        "kadence.io", "v1alpha1", "bench", "jobs"
    )
    return list(got["items"])


# ------------------------------------------------------------------------------------ metrics


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.fullmatch(r"([a-zA-Z_:]+)(\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative buckets ``(le, count)`` of histogram ``name``."""
    buckets = []
    for line in text.splitlines():
        match = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}} (\S+)', line)
        if match:
            buckets.append((float(match.group(1)), float(match.group(2))))
    return sorted(buckets)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """The upper bound of the bucket holding quantile ``q`` ("<= 5 ms")."""
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if total and count >= q * total:
            return f"<= {le * 1000:g} ms" if le != float("inf") else "> 30 s"
    return "n/a"


def share_within(buckets: list[tuple[float, float]], bound: float) -> float | None:
    """The share of observations at most ``bound`` (a bucket bound), from cumulative buckets."""
    total = buckets[-1][1] if buckets else 0
    within = next((count for le, count in buckets if le == bound), None)
    return round(within / total, 4) if total and within is not None else None


def delta_buckets(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


# ------------------------------------------------------------------------------------ streams


@dataclass(frozen=True)
class Stored:
    request: RunRequest
    stored: datetime


async def _read(url: str, stream: str, concurrency: int) -> list[Stored]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        gate = asyncio.Semaphore(concurrency)

        async def one(seq: int) -> Stored | None:
            async with gate:
                try:
                    msg = await js.get_msg(stream, seq)
                except Exception:
                    return None
            assert msg.time is not None
            return Stored(decode_run(msg.data or b""), msg.time)

        found = await asyncio.gather(
            *(one(s) for s in range(info.state.first_seq, info.state.last_seq + 1))
        )
        return [s for s in found if s is not None]
    finally:
        await nc.close()


def read_runs(st: Stack, queue: str, *, concurrency: int = 256) -> list[Stored]:
    """Every run request in the Queue's stream, with the time JetStream stored it."""
    return asyncio.run(_read(st.nats.url, constants.stream_name("bench", queue), concurrency))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50_ms": round(at(0.50) * 1000, 1),
        "p90_ms": round(at(0.90) * 1000, 1),
        "p99_ms": round(at(0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"wrote {path}")
    return path


def now() -> datetime:
    return datetime.now(UTC)
