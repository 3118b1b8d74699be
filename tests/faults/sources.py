"""Read the three sources the invariants compare, into one :class:`Snapshot`.

- **Kubernetes**: each Job's ``status`` (counters, runs, active) as the operator wrote it.
- **NATS**: every result the workers published to ``KADENCE_RESULTS`` for the namespace (read
  with an ephemeral pull consumer, acknowledging nothing, decoded with
  :func:`kadence.protocol.decode_results`, which also takes batches); the work streams' and
  consumers' backlog, the operator's results consumer, and the dead-letter streams.
- **S3**: every object a run record or a result reports, as it is now (size, etag; and who
  wrote it, read from the object, when its etag is not one that was reported).

Nothing here judges; :mod:`tests.faults.invariants` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import nats
from minio import Minio
from minio.error import S3Error
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from kadence import constants
from kadence.protocol import DecodeError, RunResult, decode_results, salvage_ids
from kadence_devstack.kube import KubeControlPlane
from tests.faults import workload
from tests.integration import harness

Body = dict[str, Any]


@dataclass(frozen=True)
class JobView:
    """One Job as the API server has it."""

    name: str
    uid: str
    counters: dict[str, int]
    runs: list[Body]
    active: list[Body]
    next_run: str | None
    annotations: dict[str, str]

    @classmethod
    def of(cls, body: Body) -> JobView:
        status = body.get("status") or {}
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            counters={k: int(v) for k, v in (status.get("counters") or {}).items()},
            runs=list(status.get("runs") or []),
            active=list(status.get("active") or []),
            next_run=status.get("nextRunTime"),
            annotations=dict(meta.get("annotations") or {}),
        )


@dataclass(frozen=True)
class Backlog:
    """A consumer's state: messages not yet delivered, and delivered but not acknowledged."""

    stream: str
    consumer: str
    pending: int
    ack_pending: int


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    run_id: str | None
    job: str | None
    reason: str


@dataclass
class NatsView:
    #: Job name -> its results, in stream order (a batch's entries in their order).
    results: dict[str, list[RunResult]] = field(default_factory=dict)
    #: Entries or messages of the results stream that did not decode.
    undecodable: list[str] = field(default_factory=list)
    messages: int = 0
    #: Work stream name -> messages it still holds (work-queue retention: not yet acknowledged).
    stream_messages: dict[str, int] = field(default_factory=dict)
    backlogs: list[Backlog] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectView:
    uri: str
    size: int | None  # None: missing
    etag: str | None
    #: Who wrote the object now there (attempt and worker, from its content) when more than one
    #: etag was reported for it or its etag is not one of them; else empty.
    writer: str = ""
    error: str = ""


@dataclass
class Snapshot:
    jobs: dict[str, JobView]
    nats: NatsView
    objects: dict[str, ObjectView]


# -- Kubernetes --------------------------------------------------------------------------------


def read_jobs(kube: KubeControlPlane) -> dict[str, JobView]:
    out = harness.kubectl(kube, "get", "kjob", "-n", workload.NAMESPACE, "-o", "json")
    items = json.loads(out)["items"]
    return {view.name: view for view in (JobView.of(item) for item in items)}


# -- NATS --------------------------------------------------------------------------------------


async def _drain(js: Any, subject: str, stream: str) -> list[Any]:
    """Every message of ``stream`` on ``subject``, through an ephemeral consumer."""
    try:
        sub = await js.pull_subscribe(
            subject,
            stream=stream,
            config=jsapi.ConsumerConfig(
                ack_policy=jsapi.AckPolicy.NONE,
                deliver_policy=jsapi.DeliverPolicy.ALL,
                inactive_threshold=60.0,
            ),
        )
    except NotFoundError:
        return []
    found: list[Any] = []
    try:
        for _ in range(10_000):  # bounded: 10,000 batches
            try:
                found.extend(await sub.fetch(500, timeout=1.0))
            except TimeoutError:
                info = await sub.consumer_info()
                if info.num_pending == 0:
                    break
        return found
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _read_nats(url: str) -> NatsView:
    view = NatsView()
    nc = await nats.connect(servers=url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=10)
        subject = f"{constants.RESULTS_SUBJECT_PREFIX}.{workload.NAMESPACE}.*"
        for msg in await _drain(js, subject, constants.RESULTS_STREAM):
            view.messages += 1
            job = msg.subject.rsplit(".", 1)[-1]
            try:
                decoded = decode_results(msg.data or b"")
            except DecodeError as error:
                view.undecodable.append(f"{msg.subject}: {error}")
                continue
            view.undecodable.extend(f"{msg.subject}: {e}" for e in decoded.errors)
            view.results.setdefault(job, []).extend(decoded.results)

        for queue in workload.QUEUES:
            stream = constants.stream_name(workload.NAMESPACE, queue.name)
            info = await js.stream_info(stream)
            view.stream_messages[stream] = int(info.state.messages)
            for partition in range(queue.partitions):
                name = constants.consumer_name(partition)
                consumer = await js.consumer_info(stream, name)
                view.backlogs.append(
                    Backlog(stream, name, consumer.num_pending, consumer.num_ack_pending)
                )
            dlq = constants.dlq_stream_name(workload.NAMESPACE, queue.name)
            for msg in await _drain(js, constants.dlq_subject(workload.NAMESPACE, queue.name), dlq):
                run_id, job_ref = salvage_ids(msg.data or b"")
                headers = msg.headers or {}
                view.dead_letters.append(
                    DeadLetter(
                        queue=queue.name,
                        run_id=run_id,
                        job=job_ref.name if job_ref else None,
                        reason=headers.get(constants.DLQ_REASON_HEADER, "?"),
                    )
                )
        results = await js.consumer_info(constants.RESULTS_STREAM, constants.RESULTS_CONSUMER)
        view.backlogs.append(
            Backlog(
                constants.RESULTS_STREAM,
                constants.RESULTS_CONSUMER,
                results.num_pending,
                results.num_ack_pending,
            )
        )
        return view
    finally:
        await nc.close()


def read_nats(url: str) -> NatsView:
    return asyncio.run(asyncio.wait_for(_read_nats(url), timeout=120))


def read_backlogs(url: str) -> list[Backlog]:
    """Only the backlogs (the settle loop's cheap probe)."""

    async def read() -> list[Backlog]:
        nc = await nats.connect(servers=url.split(","), connect_timeout=5, max_reconnect_attempts=3)
        try:
            js = nc.jetstream(timeout=5)
            found = []
            for queue in workload.QUEUES:
                stream = constants.stream_name(workload.NAMESPACE, queue.name)
                for partition in range(queue.partitions):
                    name = constants.consumer_name(partition)
                    info = await js.consumer_info(stream, name)
                    found.append(Backlog(stream, name, info.num_pending, info.num_ack_pending))
            info = await js.consumer_info(constants.RESULTS_STREAM, constants.RESULTS_CONSUMER)
            found.append(
                Backlog(
                    constants.RESULTS_STREAM,
                    constants.RESULTS_CONSUMER,
                    info.num_pending,
                    info.num_ack_pending,
                )
            )
            return found
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(read(), timeout=30))


# -- S3 ----------------------------------------------------------------------------------------


def reported_outputs(jobs: dict[str, JobView], results: Iterable[RunResult]) -> dict[str, set[str]]:
    """Every output URI a run record or a result reports -> the etags reported for it."""
    found: dict[str, set[str]] = {}
    for job in jobs.values():
        for run in job.runs:
            for output in run.get("output") or []:
                found.setdefault(output["uri"], set()).add(output["etag"])
    for result in results:
        for output in result.outputs:
            found.setdefault(output.uri, set()).add(output.etag)
    return found


def read_objects(s3: Minio, reported: dict[str, set[str]]) -> dict[str, ObjectView]:
    found = {}
    for uri, etags in reported.items():
        parsed = urlparse(uri)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        try:
            stat = s3.stat_object(bucket, key)
        except S3Error as error:
            missing = error.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject")
            found[uri] = ObjectView(uri, None, None, error="" if missing else str(error))
            continue
        writer = ""
        if stat.etag not in etags or len(etags) > 1:  # replaced, or written by several attempts
            response = s3.get_object(bucket, key)
            try:
                body = json.loads(response.read(4096))
                writer = f"attempt {body.get('attempt')} by {body.get('worker')}"
            except ValueError:
                writer = "unreadable content"
            finally:
                response.close()
                response.release_conn()
        found[uri] = ObjectView(uri, stat.size, stat.etag, writer)
    return found


def to_json(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON, saved beside the logs to look into a violation afterwards."""
    return {
        "jobs": {name: dataclasses.asdict(job) for name, job in snap.jobs.items()},
        "results": {
            job: [r.model_dump(mode="json", exclude_none=True) for r in results]
            for job, results in snap.nats.results.items()
        },
        "undecodable": snap.nats.undecodable,
        "stream_messages": snap.nats.stream_messages,
        "backlogs": [dataclasses.asdict(b) for b in snap.nats.backlogs],
        "dead_letters": [dataclasses.asdict(d) for d in snap.nats.dead_letters],
        "objects": {uri: dataclasses.asdict(o) for uri, o in snap.objects.items()},
    }


def snapshot(*, kube: KubeControlPlane, nats_url: str, s3: Minio) -> Snapshot:
    jobs = read_jobs(kube)
    view = read_nats(nats_url)
    everything = [r for results in view.results.values() for r in results]
    objects = read_objects(s3, reported_outputs(jobs, everything))
    return Snapshot(jobs=jobs, nats=view, objects=objects)
