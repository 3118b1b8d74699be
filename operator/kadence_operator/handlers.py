"""kopf handlers for Queue and Job: thin adapters from watch events to the operator's parts.

A bad Queue or Job never crashes the operator and never makes it loop: the problem is written to
the ``Ready`` condition (reason + a message naming the field) with a Warning Event, and the handler
returns; the next change of the object is handled afresh. Only transient trouble (NATS down) is
retried, with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nats.js.errors import NotFoundError

from kadence import constants
from kadence_operator import events, runtime
from kadence_operator.api import (
    GROUP,
    VERSION,
    InvalidResource,
    QueueSpec,
    check_job,
    parse_job,
    parse_queue,
)
from kadence_operator.api.durations import parse_duration
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.queues import streams, workers
from kadence_operator.results.conditions import condition, set_condition
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Status

logger = logging.getLogger(__name__)
FINALIZER = "kadence.io/finalizer"


def _rt(memo: Any) -> runtime.Runtime:
    rt: runtime.Runtime = memo.runtime
    return rt


def _ready(
    *, ok: bool, reason: str, message: str, generation: int, extra: Status | None = None
) -> Any:
    now = datetime.now(UTC)

    def mutation(status: Status) -> Status:
        new = {**status, **(extra or {}), "observedGeneration": generation}
        new["conditions"] = set_condition(
            status.get("conditions", []),
            type_="Ready",
            status=ok,
            reason=reason,
            message=message,
            now=now,
            generation=generation,
        )
        return new

    return mutation


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register every handler on ``registry`` with the intervals from ``settings``."""
    queues = (GROUP, VERSION, "queues")
    jobs = (GROUP, VERSION, "jobs")

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount; elsewhere: $KUBECONFIG (as the kubernetes client does).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30
        memo.runtime = await runtime.start(operator_settings)

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        if getattr(memo, "runtime", None) is not None:
            await runtime.shutdown(_rt(memo))

    # ------------------------------------------------------------------ Queues

    @kopf.on.event(*queues, registry=registry)
    async def queue_seen(event: Any, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        key = (body.metadata.namespace or "", body.metadata.name or "")
        if event["type"] == "DELETED":
            rt.queues.pop(key, None)
            return
        rt.queue_writer.observe(dict(body))
        try:
            spec = parse_queue(body)
        except InvalidResource:
            rt.queues[key] = QueueInfo(key[0], key[1], 1, 30.0, False, "spec is invalid")
            return
        ready = condition(list((body.get("status") or {}).get("conditions") or []), "Ready")
        rt.queues[key] = QueueInfo(
            namespace=key[0],
            name=key[1],
            partitions=spec.partitions,
            ack_wait_seconds=parse_duration(spec.delivery.ack_wait).total_seconds(),
            ready=bool(ready and ready.get("status") == "True"),
            reason=str((ready or {}).get("message") or "not reconciled yet"),
        )

    @kopf.on.create(*queues, registry=registry)
    @kopf.on.update(*queues, registry=registry, field="spec")
    @kopf.on.resume(*queues, registry=registry)
    async def queue_reconcile(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        await _reconcile_queue(_rt(memo), dict(body), retry=retry)

    @kopf.on.delete(*queues, registry=registry)
    async def queue_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        ref = streams.QueueRef(body.metadata.namespace or "", body.metadata.name or "")
        policy = (body.get("spec") or {}).get("deletionPolicy", "Delete")
        if policy == "Delete":
            removed = await streams.delete(rt.js, ref)
            logger.info("deleted streams of %s/%s: %s", ref.namespace, ref.name, removed)
        rt.queue_writer.forget(ref.namespace, ref.name)

    @kopf.timer(*queues, registry=registry, interval=settings.queue_status_interval, idle=1)
    async def queue_refresh(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        if not rt.owns(body.metadata.uid or ""):
            return
        await _refresh_queue(rt, dict(body))

    # ------------------------------------------------------------------ Jobs

    @kopf.on.event(*jobs, registry=registry)
    async def job_seen(event: Any, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        rt = _rt(memo)
        raw = dict(body)
        key = (body.metadata.namespace or "", body.metadata.name or "")
        if event["type"] == "DELETED":
            rt.scheduler.remove(*key)
            rt.job_bodies.pop(key, None)
            rt.job_writer.forget(*key)
            return
        rt.job_writer.observe(raw)
        rt.job_bodies[key] = raw
        uid = body.metadata.uid or ""
        generation = int(body.metadata.get("generation") or 0)
        status = dict(body.get("status") or {})
        ready = condition(list(status.get("conditions") or []), "Ready")
        problems = check_job(raw)
        if problems:
            rt.scheduler.remove(*key)
            message = "; ".join(problems)[:4000]
            changed = (
                ready is None or ready.get("message") != message or ready.get("status") != "False"
            )
            if changed:
                rt.job_writer.submit(
                    *key,
                    _ready(ok=False, reason="InvalidSpec", message=message, generation=generation),
                    uid=uid,
                )
                await events.post(rt.api, obj=raw, reason="InvalidSpec", message=message)
            return
        # The scheduler writes Ready=True (or QueueNotReady) when it first looks at the Job.
        rt.scheduler.upsert(raw, parse_job(raw))


async def _reconcile_queue(rt: runtime.Runtime, body: dict[str, Any], *, retry: int) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    uid, generation = meta["uid"], int(meta.get("generation") or 0)
    try:
        spec = parse_queue(body)
    except InvalidResource as error:
        message = str(error)[:4000]
        rt.queue_writer.submit(
            *key,
            _ready(ok=False, reason="InvalidSpec", message=message, generation=generation),
            uid=uid,
        )
        await events.post(rt.api, obj=body, reason="InvalidSpec", message=message)
        return
    ref = streams.QueueRef(*key)
    try:
        changes = await streams.apply(
            rt.js, ref, spec, duplicate_window=rt.settings.duplicate_window
        )
    except streams.ImmutableChange as error:
        message = str(error)[:4000]
        rt.queue_writer.submit(
            *key,
            _ready(ok=False, reason="ImmutableChange", message=message, generation=generation),
            uid=uid,
        )
        await events.post(rt.api, obj=body, reason="ImmutableChange", message=message)
        return
    except Exception as error:  # NATS unreachable or refusing: retry with backoff
        message = f"NATS JetStream is not reachable or refused the stream: {error}"[:4000]
        rt.queue_writer.submit(
            *key,
            _ready(ok=False, reason="NatsUnavailable", message=message, generation=generation),
            uid=uid,
        )
        raise kopf.TemporaryError(message, delay=min(60, 2 ** min(retry, 6))) from error
    for change in changes:
        logger.info("%s/%s: %s", *key, change)
    if spec.workers is not None:
        await _ensure_workers(rt, body, spec, pending=None)
    subjects = [constants.subject(ref.namespace, ref.name, p) for p in range(spec.partitions)]
    rt.queue_writer.submit(
        *key,
        _ready(
            ok=True,
            reason="Reconciled",
            message=f"stream {ref.stream} with {spec.partitions} partition(s)",
            generation=generation,
            extra={"stream": ref.stream, "subjects": subjects},
        ),
        uid=uid,
    )
    ack_wait = parse_duration(spec.delivery.ack_wait).total_seconds()
    rt.queues[key] = QueueInfo(key[0], key[1], spec.partitions, ack_wait, True)


_LAST_DRIFT: dict[str, float] = {}
_LAST_SCALE: dict[str, float] = {}


async def _refresh_queue(rt: runtime.Runtime, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    uid = meta["uid"]
    try:
        spec = parse_queue(body)
    except InvalidResource:
        return
    ref = streams.QueueRef(*key)
    generation = int(meta.get("generation") or 0)
    now = time.monotonic()
    try:
        missing = False
        try:
            await rt.js.stream_info(ref.stream)
        except NotFoundError:
            missing = True
        if missing or now - _LAST_DRIFT.get(uid, 0.0) >= rt.settings.drift_interval:
            _LAST_DRIFT[uid] = now
            try:
                restored = await streams.apply(
                    rt.js, ref, spec, duplicate_window=rt.settings.duplicate_window
                )
            except streams.ImmutableChange:
                restored = []  # reported by the reconcile handler; nothing to restore
            else:
                if restored:
                    message = "restored behind the operator's back: " + ", ".join(restored)
                    await events.post(rt.api, obj=body, reason="DriftRestored", message=message)
                    rt.queue_writer.submit(
                        *key,
                        _ready(
                            ok=True,
                            reason="Reconciled",
                            message=f"stream {ref.stream} restored",
                            generation=generation,
                        ),
                        uid=uid,
                    )
        info = await rt.js.stream_info(ref.stream)
        consumers = await rt.js.consumers_info(ref.stream)
    except Exception as error:
        rt.queue_writer.submit(
            *key,
            _ready(
                ok=False,
                reason="NatsUnavailable",
                message=f"cannot read or restore stream {ref.stream}: {error}",
                generation=generation,
            ),
            uid=uid,
        )
        return
    dead = 0
    if spec.dead_letter.enabled:
        try:
            dead = (await rt.js.stream_info(ref.dlq_stream)).state.messages
        except Exception:
            dead = 0
    pending = sum(c.num_pending or 0 for c in consumers)
    ack_pending = sum(c.num_ack_pending or 0 for c in consumers)
    redelivered = sum(c.num_redelivered or 0 for c in consumers)
    worker_counts = None
    if spec.workers is not None:
        worker_counts = await _ensure_workers(rt, body, spec, pending=pending)
    stats: Status = {
        "messages": info.state.messages,
        "bytes": info.state.bytes,
        "pending": pending,
        "ackPending": ack_pending,
        "redelivered": redelivered,
        "deadLettered": dead,
        "lastSyncTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if worker_counts is not None:
        stats["workers"] = worker_counts
    rt.queue_writer.submit(*key, lambda s: {**s, **stats}, uid=uid)


async def _ensure_workers(
    rt: runtime.Runtime, body: dict[str, Any], spec: QueueSpec, *, pending: int | None
) -> dict[str, int]:
    meta = body["metadata"]
    namespace, queue = meta["namespace"], meta["name"]
    apps = client.AppsV1Api(rt.api)
    name = workers.deployment_name(queue)

    def read() -> Any:
        try:
            return apps.read_namespaced_deployment(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    existing = await asyncio.to_thread(read)
    current = existing.spec.replicas if existing is not None else None
    since = time.monotonic() - _LAST_SCALE[meta["uid"]] if meta["uid"] in _LAST_SCALE else None
    decision = workers.decide_replicas(
        spec=spec, pending=pending or 0, current=current, seconds_since_last_scale=since
    )
    connection = rt.connection
    worker_env = {
        "KADENCE_NATS_URL": ",".join(connection.nats_urls),
        "KADENCE_OUTPUT_BUCKET": connection.output_bucket,
        "KADENCE_NAMESPACE": namespace,
    }
    if connection.s3_endpoint:
        worker_env["KADENCE_S3_ENDPOINT"] = connection.s3_endpoint
        worker_env["KADENCE_S3_SECURE"] = "true" if connection.s3_secure else "false"
    deployment = workers.render_deployment(
        namespace=namespace,
        queue=queue,
        spec=spec,
        replicas=decision.replicas,
        worker_env=worker_env,
    )
    kopf.adopt(deployment, owner=cast(Any, body))

    def write() -> Any:
        if existing is None:
            return apps.create_namespaced_deployment(namespace, cast(Any, deployment))
        return apps.patch_namespaced_deployment(name, namespace, deployment)

    result = await asyncio.to_thread(write)
    if current != decision.replicas:
        _LAST_SCALE[meta["uid"]] = time.monotonic()
        logger.info(
            "%s/%s workers: %s -> %s (%s)",
            namespace,
            queue,
            current,
            decision.replicas,
            decision.reason,
        )
    ready = (result.status.ready_replicas or 0) if result.status is not None else 0
    return {"desired": decision.replicas, "ready": ready}
