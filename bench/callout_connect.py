"""What the NATS auth callout adds to the time a client takes to connect.

With ``kadence_operator.identity`` in front of NATS, every CONNECT waits for the callout: a
TokenReview of the client's ServiceAccount token, a list of its namespace's Queues and a
SubjectAccessReview per Queue and verb (``consume``, ``publish``), all against the API server,
then a signed user JWT back to nats-server. Workers connect once and reconnect rarely, so this
matters for start-up and reconnect storms, not for throughput; this measures how much it is.

One nats-server configured as the integration tests' (``authorization { users, auth_callout }``),
the callout as a process of its own, a real etcd + kube-apiserver (one Queue, a ServiceAccount
that a Role lets ``consume`` and ``publish`` it: four API calls a connect). Two ways of
connecting to that same server, timed from ``nats.connect`` to its return (the server's answer
to CONNECT + PING; the close that follows is not timed), one connection after the other:

* ``callout``: the ServiceAccount's token (audience ``kadence.io/nats``), through the callout;
* ``floor``: the server's static user with its password. It is one of ``auth_users``, so
  nats-server checks it against its own config and never asks the callout: the same server,
  configuration and client work, without the callout.

``--rounds`` rounds of ``--connects`` connections each way, the order alternating (``callout``
first in even rounds), after ``--warmup`` connections each way not counted. It prints and saves
each round's medians and ratio callout ÷ floor, their median and range, and the CPU time the
callout, the API server, etcd and nats-server spent per ``callout`` connection:

    .venv/bin/python -m bench.callout_connect --rounds 10 --connects 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from bench.common import BIN, REPO, cpu_seconds, load, machine, save, say
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import AuthCallout, NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_operator.identity import natsjwt

NAMESPACE = "bench"
QUEUE = "q"
SERVICE_ACCOUNT = "kadence-worker"
AUDIENCE = "kadence.io/nats"
CALLOUT_USER = "kadence-callout"
WAYS = ("callout", "floor")


@dataclass
class Servers:
    workdir: Path
    kube: KubeControlPlane
    nats: NatsServer
    callout: ManagedProcess
    #: The callout's static NATS user's password (the floor's credentials). Never printed.
    password: str = field(repr=False)
    #: The ServiceAccount's token (the callout way's credentials). Never printed.
    token: str = field(repr=False, default="")

    def pids(self) -> dict[str, int]:
        found = {p.name: p.pid for p in self.kube.processes}
        found["nats-server"] = self.nats.nodes[0].process.pid
        found["callout"] = self.callout.pid
        return {name: pid for name, pid in found.items() if pid}


def kubectl(kube: KubeControlPlane, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")


def objects() -> list[dict[str, Any]]:
    """The Queue, the worker's ServiceAccount and the Role that lets it use the Queue."""
    meta = {"namespace": NAMESPACE, "name": SERVICE_ACCOUNT}
    return [
        {
            "apiVersion": "kadence.io/v1alpha1",
            "kind": "Queue",
            "metadata": {"namespace": NAMESPACE, "name": QUEUE},
            "spec": {},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": ["kadence.io"],
                    "resources": ["queues"],
                    "verbs": ["consume", "publish"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": SERVICE_ACCOUNT,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
    ]


def token_for(kube: KubeControlPlane) -> str:
    """A TokenRequest for the worker, as the kubelet makes for a projected token."""
    return kube.service_account_token(NAMESPACE, SERVICE_ACCOUNT, audiences=(AUDIENCE,))


def secret_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def servers(keep: bool) -> Iterator[Servers]:
    """etcd + kube-apiserver, the nats-server with the auth callout, the callout; all stopped
    (by PID, in ``finally``) on the way out, also on Ctrl-C or failure."""
    workdir = Path(tempfile.mkdtemp(prefix="kadence-bench-callout-"))
    kube = KubeControlPlane(workdir / "kube", with_controller_manager=False)
    issuer = natsjwt.new_account_key()
    password = secrets.token_hex(16)
    server = NatsServer(
        workdir / "nats",
        auth_callout=AuthCallout(
            issuer=natsjwt.public_key(issuer), user=CALLOUT_USER, password=password
        ),
    )
    callout = ManagedProcess(
        name="callout",
        argv=[
            sys.executable,
            "-m",
            "kadence_operator.identity",
            "--issuer-seed-file",
            str(secret_file(workdir / "issuer.seed", bytes(issuer.seed))),
            "--password-file",
            str(secret_file(workdir / "callout.password", password.encode())),
            "--user",
            CALLOUT_USER,
        ],
        log_path=workdir / "callout.log",
    )
    try:
        say(f"starting servers in {workdir}")
        kube.start()
        kubectl(kube, "apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl(kube, "wait", "--for=condition=Established", "crd/queues.kadence.io")
        kubectl(kube, "create", "namespace", NAMESPACE)
        kubectl(
            kube,
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects()}),
        )
        server.start()
        callout.env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "KADENCE_NATS_URL": server.url,
        }
        log = callout.log_path
        callout.start(
            ready=lambda: "answering NATS authorization requests" in log.read_text(), timeout=60
        )
        yield Servers(workdir, kube, server, callout, password, token_for(kube))
    finally:
        callout.stop()
        server.stop()
        kube.stop()
        if keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        say("servers stopped")


async def connects(st: Servers, way: str, count: int) -> list[float]:
    """``count`` connections one after the other; the milliseconds each ``connect`` took."""
    if way == "callout":
        credentials: dict[str, Any] = {"token": st.token}
    else:
        credentials = {"user": CALLOUT_USER, "password": st.password}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        nc = await asyncio.wait_for(
            nats.connect(
                servers=st.nats.urls,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=10,
                **credentials,
            ),
            15,
        )
        times.append((time.perf_counter() - started) * 1000)
        await nc.close()
    return times


async def measure(st: Servers, args: argparse.Namespace) -> dict[str, Any]:
    for way in WAYS:
        await connects(st, way, args.warmup)
    pids = st.pids()
    cpu = {way: dict.fromkeys(pids, 0.0) for way in WAYS}
    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        row: dict[str, Any] = {"load": load()}
        for way in WAYS if n % 2 == 0 else tuple(reversed(WAYS)):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            times = await connects(st, way, args.connects)
            for name, pid in pids.items():
                cpu[way][name] += cpu_seconds(pid) - before[name]
            row[way] = {
                "median_ms": round(statistics.median(times), 3),
                "min_ms": round(min(times), 3),
                "max_ms": round(max(times), 3),
                "all_ms": [round(t, 3) for t in times],
            }
        row["ratio"] = round(row["callout"]["median_ms"] / row["floor"]["median_ms"], 2)
        rounds.append(row)
        say(
            f"round {n + 1}/{args.rounds}: callout {row['callout']['median_ms']:.2f} ms, "
            f"floor {row['floor']['median_ms']:.2f} ms, ratio {row['ratio']} (load {row['load']})"
        )
    total = args.rounds * args.connects
    ratios = sorted(r["ratio"] for r in rounds)
    everything = {way: sorted(t for r in rounds for t in r[way]["all_ms"]) for way in WAYS}
    return {
        "ratio": {
            "median": round(statistics.median(ratios), 2),
            "min": ratios[0],
            "max": ratios[-1],
        },
        "median_ms": {
            way: round(statistics.median(r[way]["median_ms"] for r in rounds), 3) for way in WAYS
        },
        "p90_ms": {
            way: round(everything[way][int(0.9 * (len(everything[way]) - 1))], 3) for way in WAYS
        },
        # CPU milliseconds per connection, by process (the kube-apiserver's includes its
        # own background work over the same seconds).
        "cpu_ms_per_connect": {
            way: {name: round(1000 * s / total, 3) for name, s in cpu[way].items()} for way in WAYS
        },
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--connects", type=int, default=20, help="connections per way a round")
    parser.add_argument("--warmup", type=int, default=10, help="connections each way not timed")
    parser.add_argument("--name", default="callout_connect")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    args = parser.parse_args()
    with servers(args.keep) as st:
        say(f"load before: {load()}")
        measured = asyncio.run(measure(st, args))
    result: dict[str, Any] = {
        "benchmark": "callout_connect",
        "args": vars(args),
        "machine": machine(),
        "nats_server": subprocess.run(
            [str(BIN / "nats-server"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        **measured,
    }
    medians, ratio = result["median_ms"], result["ratio"]
    say(
        f"connect: callout {medians['callout']} ms, floor {medians['floor']} ms (medians of "
        f"round medians); callout ÷ floor {ratio['median']} ({ratio['min']}-{ratio['max']})"
    )
    say(f"CPU ms per callout connect: {result['cpu_ms_per_connect']['callout']}")
    save(args.name, result)


if __name__ == "__main__":
    main()
