"""Benchmark (issue #6): one worker process draining no-op tasks — Kadence, bare nats-py, Celery.

In one run on one machine, with the same task count and concurrency for every side:

* **kadence** — ``--tasks`` RunRequests for a no-op task (``concurrencyPolicy: Allow``, so no
  Lease) are published to a Queue stream (``ensure_queue_stream``, ``--partitions``), then the
  real ``kadence worker`` CLI runs as a subprocess and drains it: per run it reports ``Running``
  (without waiting for its ack), runs the task, reports ``Succeeded`` and double-acks.
  Throughput is runs / (first ``started_at`` → last ``finished_at``), read back from the results
  stream. No S3 (nothing is stored for a
  task returning ``None``); ``--s3`` adds a line with SeaweedFS configured.
* **bare** — the same messages in a fresh stream of the same configuration, drained by a bare
  nats-py ``fetch(batch)`` + ``ack`` loop in its own process (``bench/_worker_bare.py``), with the
  batch the worker asks for at most (its concurrency).
* **celery** — the same number of no-op tasks sent to a Redis broker (Debian's ``redis-server``,
  started here on loopback without persistence), then one ``celery worker`` with the same
  concurrency (``threads`` pool: one process, like the Kadence worker) drains them.
* **lease** — the cost of the Job Lease: ``--lease-runs`` runs with ``concurrencyPolicy: Forbid``
  (acquire, verify, release against a real kube-apiserver) vs ``Allow``, serially (concurrency 1,
  one Job) and at full concurrency (one Job per run).

Each measurement is repeated ``--repeats`` times (median and range are reported), each after
waiting up to ``--load-wait`` seconds for the 1-minute load average to fall below ``--max-load``.
The sides are interleaved round by round, and each round starts one side later than the one
before (round 2 runs the second side first, and so on), so that no side always runs first.
``--profile`` runs the Kadence worker once more under cProfile and prints its top functions.

    .venv/bin/python -m bench.worker_throughput                      # everything, 3 repeats
    .venv/bin/python -m bench.worker_throughput --only kadence,bare --repeats 1 --tasks 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import psutil
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench.common import BIN, REPO, load, machine, say
from kadence import constants
from kadence.protocol import (
    ConcurrencyPolicy,
    JobRef,
    RunRequest,
    RunResult,
    RunState,
    decode_results,
    encode,
)
from kadence.streams import ensure_dlq_stream, ensure_queue_stream, ensure_results_stream
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess, SetupError, free_port

NAMESPACE = "bench"
REDIS_SERVER = Path("/usr/bin/redis-server")
SECTIONS = ("kadence", "bare", "celery", "lease")
#: Run only when asked for (``--only``, ``--profile``).
EXTRA_SECTIONS = ("whatif", "profile")


# ------------------------------------------------------------------------------------ records


@dataclass
class Measure:
    """One timed drain."""

    section: str
    variant: str
    repeat: int
    count: int
    seconds: float
    load_before: str
    quiet: bool
    cpu_cores: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def ms_per_run(self) -> float:
        return self.seconds / self.count * 1000


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    nats: NatsServer
    measures: list[Measure] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    counter: int = 0
    #: More server processes whose CPU the Kadence drains record (kube-apiserver, etcd).
    servers: dict[str, int] = field(default_factory=dict)

    def next_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def wait_quiet(max_load: float, wait: float) -> tuple[str, bool]:
    """Wait up to ``wait`` s for the 1-minute load average to fall below ``max_load``."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        now = load()
        if float(now.split()[0]) < max_load:
            return now, True
        if time.monotonic() >= deadline:
            say(f"load still {now} after {wait:.0f}s; measuring anyway")
            return now, False
        if not said:
            say(f"load {now}: waiting up to {wait:.0f}s for it to fall below {max_load}")
            said = True
        time.sleep(5)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return float(total)
    except psutil.Error:
        return 0.0


class CpuWindow:
    """CPU cores used by some processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.c0: dict[str, float] = {}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {name: tree_cpu(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return {
            name: round((tree_cpu(pid) - self.c0[name]) / elapsed, 2)
            for name, pid in self.pids.items()
        }


# ------------------------------------------------------------------------------------ servers


class RedisServer:
    """Debian's redis-server on 127.0.0.1, no persistence, stopped by ``stop()``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not REDIS_SERVER.exists():
            raise SetupError(
                f"{REDIS_SERVER} is missing: the Celery side needs Debian's redis-server "
                "(apt-get update && apt-get install -y redis-server); "
                "or leave Celery out with --only kadence,bare,lease"
            )
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = ManagedProcess(
            name="redis-server",
            argv=[
                str(REDIS_SERVER),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            log_path=self.workdir / "redis.log",
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        self.process.start(ready=lambda: bool(client.ping()), timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# ------------------------------------------------------------------------------------ NATS


async def _publish_runs(
    url: str,
    *,
    queue: str,
    count: int,
    task: str,
    partitions: int,
    policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
    jobs: list[JobRef] | None = None,
) -> None:
    """Create the Queue's streams, empty the results stream and publish ``count`` requests."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_queue_stream(
            js, namespace=NAMESPACE, queue=queue, partitions=partitions, ack_wait=30.0
        )
        await ensure_dlq_stream(js, namespace=NAMESPACE, queue=queue)
        await ensure_results_stream(js)
        await js.purge_stream(constants.RESULTS_STREAM)
        stream = constants.stream_name(NAMESPACE, queue)
        window = 500
        for first in range(0, count, window):
            pending = []
            for i in range(first, min(count, first + window)):
                request = RunRequest(
                    run_id=f"{queue}-{i:06d}",
                    task=task,
                    job=jobs[i % len(jobs)] if jobs else None,
                    concurrency_policy=policy,
                    ack_wait_seconds=30.0,
                    dlq_subject=constants.dlq_subject(NAMESPACE, queue),
                )
                pending.append(
                    js.publish(
                        constants.subject(NAMESPACE, queue, i % partitions),
                        encode(request),
                        stream=stream,
                        headers={constants.MSG_ID_HEADER: request.run_id},
                    )
                )
            await asyncio.gather(*pending)
        info = await js.stream_info(stream)
        if info.state.messages != count:
            raise RuntimeError(f"{stream} holds {info.state.messages} messages, not {count}")
    finally:
        await nc.close()


async def _stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def _delete_stream(url: str, queue: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in (
            constants.stream_name(NAMESPACE, queue),
            constants.dlq_stream_name(NAMESPACE, queue),
        ):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _read_results(url: str) -> list[RunResult]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(constants.RESULTS_STREAM)).state.messages
        sub = await js.pull_subscribe(
            constants.RESULTS_SUBJECTS,
            stream=constants.RESULTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=10.0,
            ),
        )
        found: list[RunResult] = []
        read = 0
        while read < total:  # messages: a worker sends the results that end together as one
            msgs = await sub.fetch(1000, timeout=10)
            read += len(msgs)
            for m in msgs:
                found.extend(decode_results(m.data).results)
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def wait_drained(
    url: str,
    stream: str,
    count: int,
    *,
    alive: Callable[[], bool],
    timeout: float,
    cpu: CpuWindow,
) -> dict[str, float]:
    """Poll until ``stream`` is empty (every message acked); CPU use from the first progress."""

    async def poll() -> dict[str, float]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            started = False
            while True:
                left = (await js.stream_info(stream)).state.messages
                if not started and left < count:
                    cpu.start()
                    started = True
                if left == 0:
                    return cpu.stop() if started else {}
                if not alive():
                    raise RuntimeError(f"the worker exited with {left} messages left")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{left} of {count} messages left after {timeout:.0f}s")
                await asyncio.sleep(0.25)
        finally:
            await nc.close()

    return asyncio.run(poll())


# ------------------------------------------------------------------------------------ Kadence


@dataclass(frozen=True)
class KadenceVariant:
    """``mode:level[:s3]``: sync or async no-op, the worker's log level, storage or not."""

    mode: str
    level: str
    s3: bool = False

    @classmethod
    def parse(cls, text: str) -> KadenceVariant:
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("sync", "async"):
            raise argparse.ArgumentTypeError(f"expected sync|async:LEVEL[:s3], got {text!r}")
        return cls(parts[0], parts[1].upper(), len(parts) == 3 and parts[2] == "s3")

    def __str__(self) -> str:
        return f"{self.mode}:{self.level}" + (":s3" if self.s3 else "")

    @property
    def task(self) -> str:
        return "bench.noop" if self.mode == "sync" else "bench.anoop"


def start_worker(
    ctx: Context,
    *,
    queue: str,
    concurrency: int,
    level: str,
    extra_env: dict[str, str],
    profile: Path | None = None,
) -> ManagedProcess:
    command = [
        "worker",
        "--queue",
        queue,
        "--app",
        "bench._worker_app:app",
        "-n",
        NAMESPACE,
        "--concurrency",
        str(concurrency),
        "--metrics-port",
        "0",
        "--grace-period",
        "10",
        "--log-level",
        level,
        "--name",
        "bench-worker",
    ]
    if profile is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "kadence", *command]
    else:
        argv = [str(BIN / "kadence"), *command]
    proc = ManagedProcess(
        name=f"kadence worker {queue}",
        argv=argv,
        log_path=ctx.workdir / f"worker-{queue}.log",
        env={**ctx.env, "KADENCE_NATS_URL": ctx.nats.url, **extra_env},
        cwd=REPO,
    )
    proc.start(ready=lambda: True)
    return proc


def kadence_drain(
    ctx: Context,
    *,
    section: str,
    variant: str,
    repeat: int,
    count: int,
    task: str,
    concurrency: int,
    level: str,
    extra_env: dict[str, str] | None = None,
    policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
    jobs: list[JobRef] | None = None,
    profile: Path | None = None,
    record: bool = True,
) -> Measure:
    """Publish ``count`` runs, let one ``kadence worker`` drain them, time it from the results."""
    args = ctx.args
    queue = ctx.next_name("tp")
    stream = constants.stream_name(NAMESPACE, queue)
    asyncio.run(
        _publish_runs(
            ctx.nats.url,
            queue=queue,
            count=count,
            task=task,
            partitions=args.partitions,
            policy=policy,
            jobs=jobs,
        )
    )
    load_before, quiet = wait_quiet(args.max_load, args.load_wait if record else 0)
    say(f"{section} {variant} #{repeat}: {count} runs, load {load_before}")
    worker = start_worker(
        ctx,
        queue=queue,
        concurrency=concurrency,
        level=level,
        extra_env=extra_env or {},
        profile=profile,
    )
    try:
        assert worker.pid is not None
        nats_pid = ctx.nats.nodes[0].process.pid
        pids = (
            {"worker": worker.pid} | ({"nats-server": nats_pid} if nats_pid else {}) | ctx.servers
        )
        cpu = wait_drained(
            ctx.nats.url,
            stream,
            count,
            alive=lambda: worker.running,
            timeout=120 + count / 20,
            cpu=CpuWindow(pids),
        )
    finally:
        worker.stop(grace=30)
    results = asyncio.run(_read_results(ctx.nats.url))
    asyncio.run(_delete_stream(ctx.nats.url, queue))
    running = [r for r in results if r.state is RunState.RUNNING]
    final = [r for r in results if r.is_final]
    succeeded = sum(1 for r in final if r.state is RunState.SUCCEEDED)
    if succeeded != count:
        states = sorted({r.state.value for r in results})
        raise RuntimeError(f"{succeeded} of {count} runs succeeded (states seen: {states})")
    # Every report carries the attempt's start (short attempts send no Running report).
    first = min(r.started_at for r in results if r.started_at is not None)
    last = max(r.finished_at for r in final if r.finished_at is not None)
    seconds = (last - first).total_seconds()
    measure = Measure(
        section=section,
        variant=variant,
        repeat=repeat,
        count=count,
        seconds=seconds,
        load_before=load_before,
        quiet=quiet,
        cpu_cores=cpu,
        notes={
            "retried_attempts": sum(1 for r in results if r.attempt > 1),
            "running_reports": len(running),
            "results": len(results),
        },
    )
    say(f"  {measure.rate:,.0f} runs/s ({seconds:.2f}s), CPU {cpu}")
    if record:
        ctx.measures.append(measure)
    return measure


def kadence_round(
    ctx: Context, variants: list[KadenceVariant], repeat: int, *, s3_env: dict[str, str]
) -> None:
    for variant in variants:
        kadence_drain(
            ctx,
            section="kadence",
            variant=str(variant),
            repeat=repeat,
            count=ctx.args.tasks,
            task=variant.task,
            concurrency=ctx.args.concurrency,
            level=variant.level,
            extra_env=s3_env if variant.s3 else {},
        )


@contextlib.contextmanager
def s3_storage(ctx: Context, variants: list[KadenceVariant]) -> Iterator[dict[str, str]]:
    """SeaweedFS and the worker's ``KADENCE_S3_*`` when a variant asks for storage."""
    if not any(v.s3 for v in variants):
        yield {}
        return
    from kadence_devstack.s3 import S3Server

    server = S3Server(ctx.workdir / "s3")
    say("starting SeaweedFS for the :s3 variants")
    server.start()
    try:
        yield {
            "KADENCE_S3_ENDPOINT": server.endpoint,
            "KADENCE_S3_ACCESS_KEY": server.access_key,
            "KADENCE_S3_SECRET_KEY": server.secret_key,
            "KADENCE_S3_SECURE": "false",
        }
    finally:
        server.stop()


def probe_drain(
    ctx: Context, variant: KadenceVariant, *, skip: str = "", profile: bool = True
) -> tuple[str, float, str, bool]:
    """Drain once with the instrumented in-process worker (``bench._worker_probe``).

    Returns its report, the seconds it measured, and the load before.
    """
    args = ctx.args
    queue = ctx.next_name("probe")
    asyncio.run(
        _publish_runs(
            ctx.nats.url,
            queue=queue,
            count=args.tasks,
            task=variant.task,
            partitions=args.partitions,
        )
    )
    load_before, quiet = wait_quiet(args.max_load, args.load_wait)
    what = "profile" if profile else f"what-if skip={skip or '-'}"
    say(f"{what} {variant}: {args.tasks} runs, load {load_before}")
    argv = [
        sys.executable,
        "-m",
        "bench._worker_probe",
        "--url",
        ctx.nats.url,
        "--namespace",
        NAMESPACE,
        "--queue",
        queue,
        "--count",
        str(args.tasks),
        "--concurrency",
        str(args.concurrency),
        "--log-level",
        variant.level,
        "--skip",
        skip,
        *([] if profile else ["--no-profile"]),
    ]
    with (ctx.workdir / f"probe-{queue}.log").open("w") as log:
        done = subprocess.run(
            argv,
            cwd=REPO,
            env={**ctx.env, "KADENCE_NATS_URL": ctx.nats.url},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            timeout=300 + args.tasks / 20,
            check=False,
        )
    asyncio.run(_delete_stream(ctx.nats.url, queue))
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed with code {done.returncode}")
    found = re.match(r"(\d+) runs in ([\d.]+)s", done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected probe output: {done.stdout[:200]!r}")
    say(f"  {done.stdout.splitlines()[0]}")
    return f"load before: {load_before}\n{done.stdout}", float(found.group(2)), load_before, quiet


def whatif_round(ctx: Context, variant: KadenceVariant, repeat: int) -> str:
    """The in-process worker without a profiler, leaving out one step at a time."""
    texts = []
    for skip in ["", *ctx.args.what_if]:
        text, seconds, load_before, quiet = probe_drain(ctx, variant, skip=skip, profile=False)
        texts.append(text)
        ctx.measures.append(
            Measure(
                section="what-if",
                variant=f"skip {skip}" if skip else "nothing skipped",
                repeat=repeat,
                count=ctx.args.tasks,
                seconds=seconds,
                load_before=load_before,
                quiet=quiet,
            )
        )
    return "\n".join(texts)


# ------------------------------------------------------------------------------------ bare


def bare_round(ctx: Context, acks: list[str], repeat: int) -> None:
    args = ctx.args
    for ack in acks:
        queue = ctx.next_name("bare")
        stream = constants.stream_name(NAMESPACE, queue)
        asyncio.run(
            _publish_runs(
                ctx.nats.url,
                queue=queue,
                count=args.tasks,
                task="bench.noop",
                partitions=1,
            )
        )
        load_before, quiet = wait_quiet(args.max_load, args.load_wait)
        say(f"bare {ack} #{repeat}: {args.tasks} messages, load {load_before}")
        argv = [
            sys.executable,
            "-m",
            "bench._worker_bare",
            "--url",
            ctx.nats.url,
            "--stream",
            stream,
            "--consumer",
            constants.consumer_name(0),
            "--count",
            str(args.tasks),
            "--batch",
            str(args.batch or args.concurrency),
            "--ack",
            ack,
        ]
        proc = subprocess.Popen(argv, cwd=REPO, env=ctx.env, stdout=subprocess.PIPE, text=True)
        nats_pid = ctx.nats.nodes[0].process.pid
        cpu = CpuWindow({"bare": proc.pid} | ({"nats-server": nats_pid} if nats_pid else {}))
        cpu.start()
        try:
            out, _ = proc.communicate(timeout=120 + args.tasks / 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cores = cpu.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"the bare loop failed with code {proc.returncode}")
        got = json.loads(out.strip().splitlines()[-1])
        # The loop has exited: its own CPU figure replaces what /proc could not tell any more.
        cores["bare"] = round(float(got["cpu"]) / float(got["seconds"]), 2)
        left = asyncio.run(_stream_messages(ctx.nats.url, stream))
        asyncio.run(_delete_stream(ctx.nats.url, queue))
        if left:
            raise RuntimeError(f"{left} messages left in {stream} after the bare loop")
        measure = Measure(
            section="bare",
            variant=ack,
            repeat=repeat,
            count=int(got["count"]),
            seconds=float(got["seconds"]),
            load_before=load_before,
            quiet=quiet,
            cpu_cores=cores,
        )
        say(f"  {measure.rate:,.0f} msgs/s ({measure.seconds:.2f}s)")
        ctx.measures.append(measure)


# ------------------------------------------------------------------------------------ Celery


def celery_round(ctx: Context, variants: list[str], repeat: int, *, server: RedisServer) -> None:
    """``threads`` | ``prefork``, optionally ``:late`` (acks after the task)."""
    import redis

    from bench import celery_app

    args = ctx.args
    celery_app.app.conf.broker_url = server.url
    broker = redis.Redis(port=server.port)
    for variant in variants:
        pool, _, late = variant.partition(":")
        broker.flushall()
        with celery_app.app.producer_or_acquire() as producer:
            for _ in range(args.tasks):
                celery_app.noop.apply_async(producer=producer)
        queued = int(broker.llen(celery_app.QUEUE))
        if queued != args.tasks:
            raise RuntimeError(f"{queued} tasks queued in Redis, not {args.tasks}")
        load_before, quiet = wait_quiet(args.max_load, args.load_wait)
        say(f"celery {variant} #{repeat}: {args.tasks} tasks, load {load_before}")
        name = ctx.next_name("celery")
        done_file = ctx.workdir / f"{name}.json"
        worker = ManagedProcess(
            name="celery worker",
            argv=[
                str(BIN / "celery"),
                "-A",
                "bench.celery_app",
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(args.concurrency),
                "--loglevel",
                "WARNING",
                "-Q",
                celery_app.QUEUE,
                "-n",
                f"{name}@%h",
            ],
            log_path=ctx.workdir / f"{name}.log",
            env={
                **ctx.env,
                celery_app.BROKER_ENV: server.url,
                celery_app.DONE_FILE_ENV: str(done_file),
                celery_app.EXPECT_ENV: str(args.tasks),
                celery_app.ACKS_LATE_ENV: "1" if late == "late" else "0",
            },
            cwd=REPO,
        )
        worker.start(ready=lambda: True)
        try:
            assert worker.pid is not None
            assert server.process is not None
            pids = {"worker": worker.pid} | (
                {"redis-server": server.process.pid} if server.process.pid else {}
            )
            cpu = CpuWindow(pids)
            started = False
            deadline = time.monotonic() + 120 + args.tasks / 20
            while not done_file.exists():
                if not started and int(broker.llen(celery_app.QUEUE)) < args.tasks:
                    cpu.start()
                    started = True
                if not worker.running:
                    raise RuntimeError(f"celery exited; log: {worker.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"celery did not finish; log: {worker.log_tail()}")
                time.sleep(0.25)
            cores = cpu.stop() if started else {}
        finally:
            worker.stop(grace=30)
        got = json.loads(done_file.read_text())
        measure = Measure(
            section="celery",
            variant=variant,
            repeat=repeat,
            count=int(got["done"]),
            seconds=float(got["last"]) - float(got["first"]),
            load_before=load_before,
            quiet=quiet,
            cpu_cores=cores,
        )
        say(f"  {measure.rate:,.0f} tasks/s ({measure.seconds:.2f}s), CPU {cores}")
        ctx.measures.append(measure)


@contextlib.contextmanager
def redis_server(ctx: Context, wanted: bool) -> Iterator[RedisServer | None]:
    if not wanted:
        yield None
        return
    server = RedisServer(ctx.workdir / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ Leases


def lease_cycles(ctx: Context, kubeconfig: Path, repeat: int) -> None:
    """The Lease calls alone: acquire + verify + release of one Job's Lease, in this process."""
    from kadence.leases import LeaseClient

    cycles = max(1, ctx.args.lease_runs // 2)
    leases = LeaseClient.from_kubeconfig(str(kubeconfig))
    lock = leases.lock(namespace=NAMESPACE, job="lease-direct", holder="bench/direct/1")
    steps: dict[str, Callable[[], Any]] = {
        "acquire": lock.acquire,
        "verify": lock.verify,
        "release": lock.release,
        # Not part of a cycle: one GET as the worker does it, and the same GET without the
        # client's decoding into a V1Lease (server + HTTP only).
        "get": lambda: leases.read(NAMESPACE, lock.name),
        "get_undecoded": lambda: leases.api.read_namespaced_lease(
            lock.name, NAMESPACE, _preload_content=False
        ).read(),
    }
    for _ in range(5):  # warm-up: the Lease exists and the connections are open
        for step in steps.values():
            step()
    load_before, quiet = wait_quiet(ctx.args.max_load, ctx.args.load_wait)
    spent = dict.fromkeys(steps, 0.0)
    for _ in range(cycles):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            spent[name] += time.perf_counter() - started
    measure = Measure(
        section="lease-direct",
        variant="acquire+verify+release",
        repeat=repeat,
        count=cycles,
        seconds=spent["acquire"] + spent["verify"] + spent["release"],
        load_before=load_before,
        quiet=quiet,
        notes={f"{name}_ms": round(t / cycles * 1000, 3) for name, t in spent.items()},
    )
    say(f"lease-direct #{repeat}: {measure.ms_per_run:.2f} ms per cycle {measure.notes}")
    ctx.measures.append(measure)


def lease_section(ctx: Context, variant: KadenceVariant) -> None:
    """Forbid (Lease acquire + verify + release per run) vs Allow, same worker, same Jobs."""
    from kubernetes import client, config

    from kadence_devstack.kube import KubeControlPlane

    args = ctx.args
    kube = KubeControlPlane(ctx.workdir / "kube", with_controller_manager=False)
    say("starting etcd + kube-apiserver for the Lease runs")
    kube.start()
    try:
        new_client: Callable[..., Any] = config.new_client_from_config
        api = new_client(config_file=str(kube.kubeconfig))
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
        )
        env = {"KUBECONFIG": str(kube.kubeconfig)}
        ctx.servers = {p.name: p.pid for p in kube.processes if p.pid is not None}
        uid = "00000000-0000-4000-8000-000000000000"
        plans: dict[int, dict[str, Any]] = {}
        for concurrency in args.lease_concurrency:
            if concurrency == 1:
                jobs = [JobRef(namespace=NAMESPACE, name="lease-serial", uid=uid)]
            else:
                jobs = [
                    JobRef(namespace=NAMESPACE, name=f"lease-{i:04d}", uid=uid)
                    for i in range(args.lease_runs)
                ]
            plans[concurrency] = {
                "count": args.lease_runs,
                "task": variant.task,
                "concurrency": concurrency,
                "level": variant.level,
                "extra_env": env,
                "jobs": jobs,
            }
            # Warm-up, not recorded: creates the Leases, as a Job's earlier runs would have,
            # and lets the fresh API server finish its start-up work.
            kadence_drain(
                ctx,
                section="lease-warmup",
                variant=f"Forbid c={concurrency}",
                repeat=0,
                policy=ConcurrencyPolicy.FORBID,
                record=False,
                **plans[concurrency],
            )
        for repeat in range(1, args.repeats + 1):
            for concurrency, plan in plans.items():
                for policy in (ConcurrencyPolicy.ALLOW, ConcurrencyPolicy.FORBID):
                    kadence_drain(
                        ctx,
                        section="lease",
                        variant=f"{policy.value} c={concurrency}",
                        repeat=repeat,
                        policy=policy,
                        **plan,
                    )
            lease_cycles(ctx, kube.kubeconfig, repeat)
    finally:
        ctx.servers = {}
        kube.stop()


# ------------------------------------------------------------------------------------ report


def summarise(measures: list[Measure]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Measure]] = {}
    for m in measures:
        groups.setdefault(f"{m.section} {m.variant}", []).append(m)
    summary: dict[str, dict[str, Any]] = {}
    for key, group in groups.items():
        rates = [m.rate for m in group]
        ms = [m.ms_per_run for m in group]
        summary[key] = {
            "n": len(group),
            "median_rate": statistics.median(rates),
            "min_rate": min(rates),
            "max_rate": max(rates),
            "median_ms_per_run": statistics.median(ms),
            "min_ms_per_run": min(ms),
            "max_ms_per_run": max(ms),
            "loads": [m.load_before for m in group],
            "all_quiet": all(m.quiet for m in group),
            "cpu_cores": [m.cpu_cores for m in group],
        }
    return summary


def paired(measures: list[Measure], a: str, b: str) -> list[float]:
    """Per repeat: rate of ``a`` / rate of ``b`` (both measured in the same round)."""
    rates: dict[tuple[str, int], float] = {
        (f"{m.section} {m.variant}", m.repeat): m.rate for m in measures
    }
    repeats = sorted({m.repeat for m in measures})
    return [rates[a, r] / rates[b, r] for r in repeats if (a, r) in rates and (b, r) in rates]


def report(
    summary: dict[str, dict[str, Any]], measures: list[Measure], args: argparse.Namespace
) -> str:
    lines = [
        "| measurement | median /s | range /s | ms per run (median) | load before (1/5/15) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for key, s in summary.items():
        quiet = "" if s["all_quiet"] else " (above the load limit)"
        lines.append(
            f"| {key} | {s['median_rate']:,.0f} | {s['min_rate']:,.0f}-{s['max_rate']:,.0f} | "
            f"{s['median_ms_per_run']:.3f} | {'; '.join(s['loads'])}{quiet} |"
        )
    lines.append("")
    primary = f"kadence {args.kadence[0]}"
    compared = [(f"bare {args.bare[0]}", "goal >= 0.60")]
    compared += [(f"bare {variant}", "") for variant in args.bare[1:]]
    compared += [(f"celery {args.celery[0]}", "goal >= 3")]
    for other, goal in compared:
        for variant in args.kadence:
            ratios = paired(measures, f"kadence {variant}", other)
            if ratios:
                mark = f"; {goal}" if goal and f"kadence {variant}" == primary else ""
                lines.append(
                    f"kadence {variant} / {other}: median {statistics.median(ratios):.2f} "
                    f"(per round: {', '.join(f'{r:.2f}' for r in ratios)}{mark})"
                )
    direct = [m for m in measures if m.section == "lease-direct"]
    if direct:
        steps = ", ".join(
            f"{key[:-3]} {statistics.median(m.notes[key] for m in direct):.2f} ms"
            for key in direct[0].notes
        )
        lines.append(f"Lease calls alone (median of {len(direct)} rounds): {steps}")
    for concurrency in args.lease_concurrency:
        allow = summary.get(f"lease Allow c={concurrency}")
        forbid = summary.get(f"lease Forbid c={concurrency}")
        if allow and forbid:
            extra = [
                (1000 / r[1]) - (1000 / r[0])
                for r in zip(
                    [m.rate for m in measures if m.variant == f"Allow c={concurrency}"],
                    [m.rate for m in measures if m.variant == f"Forbid c={concurrency}"],
                    strict=True,
                )
            ]
            lines.append(
                f"Lease at concurrency {concurrency}: Forbid {forbid['median_ms_per_run']:.2f} "
                f"ms vs Allow {allow['median_ms_per_run']:.2f} ms of wall time per run; extra "
                f"per round: {', '.join(f'{e:+.2f}' for e in extra)} ms "
                f"(median {statistics.median(extra):+.2f} ms)"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[NatsServer]:
    server = NatsServer(workdir / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=1, help="of the Kadence Queue")
    parser.add_argument("--batch", type=int, default=0, help="bare fetch size (0: concurrency)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections among {SECTIONS + EXTRA_SECTIONS} (default: the first 4)",
    )
    parser.add_argument(
        "--kadence",
        type=lambda s: [KadenceVariant.parse(v) for v in s.split(",") if v],
        default=[KadenceVariant("sync", "INFO"), KadenceVariant("sync", "WARNING")],
        help="worker variants mode:LEVEL[:s3], the first is compared (default sync:INFO,"
        "sync:WARNING)",
    )
    parser.add_argument(
        "--bare",
        type=lambda s: [v for v in s.split(",") if v],
        default=["plain", "sync"],
        help="ack styles of the bare loop: plain, sync, report (bench/_worker_bare.py); the "
        "first is the goal's baseline (default plain,sync)",
    )
    parser.add_argument(
        "--celery",
        type=lambda s: [v for v in s.split(",") if v],
        default=["threads"],
        help="pools (threads|prefork)[:late], the first is compared (default threads)",
    )
    parser.add_argument("--lease-runs", type=int, default=500)
    parser.add_argument(
        "--lease-concurrency",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=[1, 16],
        help="worker concurrencies of the Lease runs (default 1,16)",
    )
    parser.add_argument("--profile", action="store_true", help="also profile one Kadence drain")
    parser.add_argument(
        "--what-if",
        type=lambda s: [v for v in s.split(";") if v],
        default=["running", "ack-sync", "running,ack-sync", "running,result,ack-sync"],
        help="section whatif: steps the in-process worker leaves out, ';' between runs "
        "(see bench/_worker_probe.py --skip)",
    )
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--load-wait", type=float, default=90.0, help="seconds, per measurement")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "kadence-worker-bench.json",
        help="JSON results (default: $TMPDIR/kadence-worker-bench.json)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = parser.parse_args()
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS) - set(EXTRA_SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.profile and "profile" not in sections:
        sections.append("profile")

    workdir = Path(tempfile.mkdtemp(prefix="kadence-bench-worker-"))
    # KADENCE_BENCH_WORKER_PYTHONPATH puts another commit's SDK in front (A/B of two commits:
    # `git worktree add /tmp/old <commit>`, then KADENCE_BENCH_WORKER_PYTHONPATH=/tmp/old/worker).
    source = os.environ.get("KADENCE_BENCH_WORKER_PYTHONPATH")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": f"{source}:{REPO}" if source else str(REPO),
        "LANG": "C.UTF-8",
    }
    if "celery" in sections and not REDIS_SERVER.exists():
        raise SystemExit(
            f"{REDIS_SERVER} is missing: install Debian's redis-server first "
            "(apt-get update && apt-get install -y redis-server), or leave Celery out "
            "with --only kadence,bare,lease"
        )
    info: dict[str, Any] = {
        "benchmark": "worker_throughput",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "nproc": os.cpu_count(),
        "load_at_start": load(),
    }
    info["args"]["kadence"] = [str(v) for v in args.kadence]
    say(f"machine {info['machine']}, load {info['load_at_start']}, temp folder {workdir}")
    profile_text = ""
    summary: dict[str, dict[str, Any]] = {}
    measures: list[Measure] = []
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    try:
        with nats_server(workdir) as server:
            ctx = Context(args=args, workdir=workdir, nats=server, env=env)
            try:
                rounds = [x for x in ("kadence", "bare", "celery") if x in sections]
                with (
                    s3_storage(ctx, args.kadence if "kadence" in rounds else []) as s3_env,
                    redis_server(ctx, "celery" in rounds) as redis,
                ):
                    # Interleaved, so that each round sees the same machine for every side,
                    # and rotated, so that no side always runs first (or right after Celery).
                    steps: list[Callable[[int], None]] = []
                    if "kadence" in rounds:
                        steps += [
                            functools.partial(kadence_round, ctx, [v], s3_env=s3_env)
                            for v in args.kadence
                        ]
                    if "bare" in rounds:
                        steps += [functools.partial(bare_round, ctx, [a]) for a in args.bare]
                    if redis is not None:
                        steps += [
                            functools.partial(celery_round, ctx, [c], server=redis)
                            for c in args.celery
                        ]
                    for repeat in range(1, args.repeats + 1 if rounds else 1):
                        shift = (repeat - 1) % len(steps) if steps else 0
                        for step in steps[shift:] + steps[:shift]:
                            step(repeat)
                if "lease" in sections:
                    lease_section(ctx, args.kadence[0])
                if "whatif" in sections:
                    for repeat in range(1, args.repeats + 1):
                        whatif_round(ctx, args.kadence[0], repeat)
                if "profile" in sections:
                    profile_text = probe_drain(ctx, args.kadence[0])[0]
            finally:
                measures = ctx.measures
                summary = summarise(measures)
                info["measures"] = [asdict(m) | {"rate": m.rate} for m in ctx.measures]
                info["summary"] = summary
                info["load_at_end"] = load()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(info, indent=2, default=str) + "\n")
                say(f"wrote {args.out}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(summary, measures, args))
    if profile_text:
        print("\n" + profile_text)


if __name__ == "__main__":
    main()
