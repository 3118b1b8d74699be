"""The operator's long-lived parts, created at start-up and stopped at clean-up.

One NATS connection, one Kubernetes client, the coalesced status writers, the shard Leases, the
scheduler, the results consumer and the dead-letter mover, each an asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from kadence import config
from kadence.config import Settings as ConnectionSettings
from kadence.protocol import RunResult, RunState
from kadence_operator import events, kube
from kadence_operator.api import API_VERSION, GROUP, VERSION, HistoryLimits, Job
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.jobs.scheduler import Scheduler
from kadence_operator.metrics import OperatorMetrics
from kadence_operator.queues import deadletter
from kadence_operator.results.consumer import ResultsConsumer, ensure_results_stream
from kadence_operator.settings import OperatorSettings
from kadence_operator.shards import ShardLeases
from kadence_operator.statuswriter import StatusWriter

logger = logging.getLogger(__name__)


_DEFAULT_LIMITS = HistoryLimits()


def _limit(history: Any, key: str) -> int:
    default: int = getattr(_DEFAULT_LIMITS, key)
    try:
        return int(history.get(key, default))
    except (AttributeError, TypeError, ValueError):
        return default  # an invalid Job: its Ready condition says why; keep the default meanwhile


@dataclass(frozen=True, slots=True)
class KnownJob:
    """What the operator keeps of every Job it has seen, besides the scheduler's view: enough
    to post an Event about it and to apply its history limits to results.

    A slotted object, not a trimmed body: at 10,000 Jobs the four small dicts of a trimmed body
    cost ~6 MB more, and a whole body (managedFields included) several kilobytes each.
    """

    namespace: str
    name: str
    uid: str
    resource_version: str
    #: ``spec.historyLimits`` (succeeded, failed).
    limits: tuple[int, int]

    @classmethod
    def of(cls, body: dict[str, Any]) -> KnownJob:
        meta = body.get("metadata") or {}
        history = (body.get("spec") or {}).get("historyLimits") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            limits=(_limit(history, "succeeded"), _limit(history, "failed")),
        )

    def event_object(self) -> dict[str, Any]:
        """The Job as :func:`events.post` takes it (the Event's ``involvedObject``)."""
        return {
            "apiVersion": API_VERSION,
            "kind": Job.crd.kind,
            "metadata": {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "resourceVersion": self.resource_version,
            },
        }


@dataclass
class Runtime:
    settings: OperatorSettings
    connection: ConnectionSettings
    api: client.ApiClient
    nc: NATS
    js: JetStreamContext
    job_writer: StatusWriter
    queue_writer: StatusWriter
    queues: dict[tuple[str, str], QueueInfo]
    scheduler: Scheduler
    shards: ShardLeases
    results: ResultsConsumer
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    jobs: dict[tuple[str, str], KnownJob] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def owns(self, uid: str) -> bool:
        from kadence_operator import scheduling

        return scheduling.shard_for(uid, self.settings.shards) in self.shards.owned()


async def start(settings: OperatorSettings) -> Runtime:
    connection = ConnectionSettings.from_env(worker_name=settings.operator_id)
    api = kube.api_client()
    options = connection.nats_options()
    options["name"] = f"kadence-operator {settings.operator_id}"
    # nats-py's own client: the worker's DirectNATS (kadence._nats) measured no gain here.
    nc = NATS()
    options.update(
        config.nats_event_callbacks(logger, closing=lambda: nc.is_closed or nc.is_draining)
    )
    await nc.connect(**options)
    js = nc.jetstream()
    await ensure_results_stream(
        js, duplicate_window=settings.duplicate_window, ack_wait=settings.results_ack_wait
    )
    await deadletter.ensure_advisory_stream(js)
    metrics = OperatorMetrics()
    job_writer = StatusWriter(
        api=api,
        group=GROUP,
        version=VERSION,
        plural="jobs",
        interval=settings.status_interval,
        metrics=metrics,
    )
    queue_writer = StatusWriter(
        api=api,
        group=GROUP,
        version=VERSION,
        plural="queues",
        interval=settings.status_interval,
        metrics=metrics,
    )
    queues: dict[tuple[str, str], QueueInfo] = {}
    jobs: dict[tuple[str, str], KnownJob] = {}

    async def job_event(key: tuple[str, str], reason: str, message: str) -> None:
        job = jobs.get(key)
        if job is not None:
            await events.post(api, obj=job.event_object(), reason=reason, message=message)

    scheduler = Scheduler(
        nc=nc,
        writer=job_writer,
        settings=settings,
        queues=queues,
        post_event=job_event,
        metrics=metrics,
    )
    job_writer.hold = scheduler.hold_for
    shards = ShardLeases(
        api=api,
        settings=settings,
        on_change=_Takeover(api, scheduler, job_writer).on_shards,
        before_release=scheduler.hand_over,
    )
    scheduler.fence(shards.ownership)
    metrics.track_jobs(scheduler.__len__)
    metrics.track_shards(lambda: len(shards.owned()))
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
        logger.info("serving metrics on :%d/metrics", settings.metrics_port)

    def limits(namespace: str, name: str) -> tuple[int, int] | None:
        job = jobs.get((namespace, name))
        return None if job is None else job.limits

    async def on_final(result: RunResult) -> None:
        if result.job is None:
            return
        scheduler.note_finished(result.job.namespace, result.job.name, result.run_id)
        if result.state in (RunState.FAILED, RunState.TIMED_OUT, RunState.DEAD_LETTERED):
            error = f": {result.error.type}: {result.error.message}" if result.error else ""
            await job_event(
                (result.job.namespace, result.job.name),
                f"Run{result.state.value}",
                f"run {result.run_id} attempt {result.attempt} {result.state.value}{error}",
            )

    results = ResultsConsumer(
        js=js,
        writer=job_writer,
        limits=limits,
        on_final=on_final,
        ack_wait=settings.results_ack_wait,
    )
    results.hold = scheduler.hold_for
    runtime = Runtime(
        settings=settings,
        connection=connection,
        api=api,
        nc=nc,
        js=js,
        job_writer=job_writer,
        queue_writer=queue_writer,
        queues=queues,
        scheduler=scheduler,
        shards=shards,
        results=results,
        metrics=metrics,
        jobs=jobs,
    )
    for name, coro in (
        ("job status writer", job_writer.run(runtime.stop)),
        ("queue status writer", queue_writer.run(runtime.stop)),
        ("shard leases", shards.run(runtime.stop)),
        ("scheduler", scheduler.run(runtime.stop)),
        ("results consumer", results.run(runtime.stop)),
        ("dead-letter mover", deadletter.run_mover(js, runtime.stop)),
        ("heap trimmer", _trim_heap(runtime.stop)),
    ):
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(functools.partial(_ended, runtime.stop, _terminate))
        runtime.tasks.append(task)
    return runtime


@dataclass
class _Takeover:
    """Shard ownership changed. Before the Jobs of shards taken from another replica fire, read
    them afresh (one LIST): the watch may not have brought the status the previous holder wrote
    just before it let go (a hand-over) or while the API server was down, and a Job decided
    from an older status decides its last slots again (a slot skipped there would run here).
    At start-up the watch's first listing is that fresh read already. What this replica's own
    status writer still holds for those Jobs (a shard lost while the API server was down, and
    taken back) is written first, so that the read includes it (a slot BufferOne held would be
    lost otherwise: written after the read, never adopted)."""

    api: client.ApiClient
    scheduler: Scheduler
    writer: StatusWriter
    started: bool = False

    async def on_shards(self, owned: frozenset[int]) -> None:
        gained = owned - self.scheduler.owned
        if self.started and gained:
            await self._read_afresh(gained)
        self.started = True
        await self.scheduler.on_shards(owned)

    async def _read_afresh(self, gained: frozenset[int]) -> None:
        with contextlib.suppress(Exception):  # still unreachable: the read below says so
            await asyncio.wait_for(self.scheduler.flush(gained), timeout=10)
        try:
            listing = await asyncio.to_thread(
                client.CustomObjectsApi(self.api).list_cluster_custom_object,
                GROUP,
                VERSION,
                "jobs",
            )
        except Exception as error:  # the watch catches up; the status checks stay idempotent
            logger.warning("could not read the Jobs of the shards taken over: %s", error)
            return
        for body in cast(dict[str, Any], listing).get("items") or []:
            self.writer.observe(body)
            self.scheduler.refresh(body)


def _terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _ended(stop: asyncio.Event, terminate: Callable[[], None], task: asyncio.Task[None]) -> None:
    """A background loop ended before the operator was told to stop: a bug or a fault it does
    not survive. An operator without its scheduler or results consumer would look alive and do
    nothing, so it stops (SIGTERM to itself, kopf's clean shutdown) and is restarted by its
    Deployment (or by whoever runs it) rather than go on half alive."""
    if stop.is_set() or task.cancelled():
        return
    error = task.exception()
    logger.critical(
        "the %s stopped unexpectedly (%s): stopping the operator so that it is restarted",
        task.get_name(),
        repr(error) if error is not None else "it returned",
        exc_info=error,
    )
    terminate()


#: How often freed heap memory is handed back to the OS (see :func:`_trim_heap`; a trim of a
#: fragmented 200 MiB heap took 15 ms, in a thread).
TRIM_INTERVAL = 15.0


async def _trim_heap(stop: asyncio.Event) -> None:
    """Every 15 s, give the heap memory Python freed back to the OS (glibc's ``malloc_trim``).

    Bursts (thousands of Jobs created or firing at once, a backlog of status writes) leave the C
    heap's high-water mark behind after the objects are gone: 10,000 idle Jobs measured ~200 MiB
    RSS without this. A no-op where the C library is not glibc.
    """
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        await stop.wait()  # (a loop that ends early stops the operator: see _ended)
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=TRIM_INTERVAL)
        await asyncio.to_thread(trim, 0)  # ctypes lets go of the GIL: the loop runs on


async def shutdown(runtime: Runtime) -> None:
    runtime.stop.set()
    done, pending = await asyncio.wait(runtime.tasks, timeout=15)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background task ended with %s", task.exception())
    with contextlib.suppress(Exception):
        await runtime.nc.drain()
    for writer in (runtime.job_writer, runtime.queue_writer):
        with contextlib.suppress(Exception):
            await writer.close()
    runtime.metrics.close()
