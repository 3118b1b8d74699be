"""Helpers shared by the worker integration tests (this module holds no tests itself).

Everything here talks to the real servers of the session fixtures: a fresh Queue (streams and
consumers made by :func:`kadence.streams.ensure_queue_stream`) per test, in-process workers, worker
subprocesses started with ``python -m kadence worker`` (so they can be killed or stopped), and
readers for the results and dead-letter streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry

from kadence import constants
from kadence.app import App
from kadence.client import KadenceClient
from kadence.config import Settings
from kadence.metrics import WorkerMetrics
from kadence.protocol import RunResult, RunState
from kadence.runtime import Worker
from kadence.streams import ensure_dlq_stream, ensure_queue_stream, ensure_results_stream
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_devstack.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def connected(server: NatsServer, namespace: str = "default") -> AsyncIterator[KadenceClient]:
    client = await KadenceClient.connect(
        Settings(nats_urls=tuple(server.urls), namespace=namespace, worker_name="test")
    )
    try:
        yield client
    finally:
        await client.close()


@dataclass
class QueueUnderTest:
    namespace: str
    name: str
    partitions: int
    ack_wait: float

    @property
    def stream(self) -> str:
        return constants.stream_name(self.namespace, self.name)


@contextlib.asynccontextmanager
async def fresh_queue(
    client: KadenceClient,
    *,
    partitions: int = 1,
    ack_wait: float = 30.0,
    max_deliver: int = 20,
) -> AsyncIterator[QueueUnderTest]:
    """A new Queue with its DLQ (and the shared results stream); deleted afterwards."""
    queue = QueueUnderTest(client.namespace, unique("q"), partitions, ack_wait)
    await ensure_results_stream(client.js)
    await ensure_queue_stream(
        client.js,
        namespace=queue.namespace,
        queue=queue.name,
        partitions=partitions,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )
    await ensure_dlq_stream(client.js, namespace=queue.namespace, queue=queue.name)
    try:
        yield queue
    finally:
        for stream in (queue.stream, constants.dlq_stream_name(queue.namespace, queue.name)):
            with contextlib.suppress(Exception):
                await client.js.delete_stream(stream)


def s3_env(s3: S3Server) -> dict[str, str]:
    return {
        "KADENCE_S3_ENDPOINT": s3.endpoint,
        "KADENCE_S3_ACCESS_KEY": s3.access_key,
        "KADENCE_S3_SECRET_KEY": s3.secret_key,
        "KADENCE_S3_SECURE": "false",
    }


@contextlib.asynccontextmanager
async def running_worker(
    app: App,
    server: NatsServer,
    *,
    queue: QueueUnderTest,
    **options: Any,
) -> AsyncIterator[Worker]:
    """An in-process :class:`Worker` on its own connection, stopped (gracefully) at the end."""
    name = options.pop("name", unique("w-"))
    client = await KadenceClient.connect(
        Settings(nats_urls=tuple(server.urls), namespace=queue.namespace, worker_name=name)
    )
    options.setdefault("fetch_timeout", 1.0)
    # The tests check every attempt's full sequence of reports, so Running is sent at once here;
    # the worker's default (Running only for attempts still going after 0.5 s) has its own test.
    options.setdefault("running_report_delay", 0.0)
    options.setdefault("metrics", WorkerMetrics(CollectorRegistry()))
    worker = Worker(app, client, queue=queue.name, name=name, **options)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield worker
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await client.close()


async def results_of(
    client: KadenceClient, *, job: str | None = None, namespace: str | None = None
) -> list[RunResult]:
    return await client.results(job=job, namespace=namespace, idle=0.3)


async def wait_results(
    client: KadenceClient,
    until: Callable[[list[RunResult]], bool],
    *,
    job: str | None = None,
    run_id: str | None = None,
    within: float = 20.0,
) -> list[RunResult]:
    """Poll the results stream until ``until(results)`` holds (results of ``run_id`` only)."""
    deadline = time.monotonic() + within
    results: list[RunResult] = []
    while time.monotonic() < deadline:
        results = await results_of(client, job=job)
        if run_id is not None:
            results = [r for r in results if r.run_id == run_id]
        if until(results):
            return results
        await asyncio.sleep(0.2)
    states = [(r.run_id, r.attempt, r.state.value) for r in results]
    raise AssertionError(f"results never satisfied the condition within {within}s: {states}")


def final(results: Sequence[RunResult]) -> bool:
    return any(r.is_final for r in results)


def states(results: Sequence[RunResult]) -> list[tuple[int, RunState]]:
    return [(r.attempt, r.state) for r in results]


async def dead_letters(client: KadenceClient, queue: QueueUnderTest) -> list[Msg]:
    """Every message in the Queue's dead-letter stream."""
    sub = await client.js.pull_subscribe(
        constants.dlq_subject(queue.namespace, queue.name),
        stream=constants.dlq_stream_name(queue.namespace, queue.name),
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    found: list[Msg] = []
    try:
        while True:
            try:
                found.extend(await sub.fetch(100, timeout=0.5))
            except TimeoutError:
                return found
    finally:
        await sub.unsubscribe()


async def stream_messages(client: KadenceClient, queue: QueueUnderTest) -> int:
    info = await client.js.stream_info(queue.stream)
    return int(info.state.messages)


class WorkerProcess:
    """``python -m kadence worker`` in a subprocess, with an App written to ``tmp_path``."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        app_source: str,
        queue: QueueUnderTest,
        nats: NatsServer,
        name: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        folder = tmp_path / "apps"
        folder.mkdir(exist_ok=True)
        (folder / "worker_app.py").write_text(textwrap.dedent(app_source))
        self.name = name
        environment = dict(os.environ)
        environment.update(
            {
                "PYTHONPATH": os.pathsep.join([str(folder), str(REPO / "worker")]),
                "PYTHONUNBUFFERED": "1",
                "KADENCE_NATS_URL": nats.url,
                "KADENCE_NAMESPACE": queue.namespace,
                "KADENCE_WORKER_NAME": name,
            }
        )
        for variable in ("KADENCE_S3_ENDPOINT", "KUBECONFIG"):
            environment.pop(variable, None)
        environment.update(env or {})
        self.process = ManagedProcess(
            name=f"kadence worker {name}",
            argv=[
                sys.executable,
                "-m",
                "kadence",
                "worker",
                "--queue",
                queue.name,
                "--app",
                "worker_app:app",
                "--metrics-port",
                "0",
                *args,
            ],
            log_path=tmp_path / f"{name}.log",
            env=environment,
            cwd=folder,
        )

    def log(self) -> str:
        return (
            self.process.log_path.read_text(errors="replace")
            if self.process.log_path.exists()
            else ""
        )

    async def start(self) -> None:
        """Start and wait until it fetches from the Queue."""
        self.process.launch()
        await asyncio.to_thread(
            self.process.wait_ready, ready=lambda: "fetching from" in self.log(), timeout=30
        )

    def stop(self) -> None:
        self.process.stop()

    async def exited(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the process to exit on its own."""

        def wait() -> bool:
            deadline = time.monotonic() + within
            while self.process.running and time.monotonic() < deadline:
                time.sleep(0.1)
            return not self.process.running

        return await asyncio.to_thread(wait)


@contextlib.contextmanager
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """Collects :class:`WorkerProcess` objects and stops them all at the end, whatever happens."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()
