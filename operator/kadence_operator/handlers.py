"""kopf handlers for Queue and Job: thin adapters from watch events to the operator's parts.

A bad Queue or Job never crashes the operator and never makes it loop: the problem is written to
the ``Ready`` condition (reason + a message naming the field) with a Warning Event, and the handler
returns; the next change of the object is handled afresh. Only transient trouble (NATS down) is
retried, with a growing delay.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nats.js.errors import NotFoundError

from kadence import constants
from kadence_operator import events, kopfstorage, runtime, scheduling, timefmt
from kadence_operator.api import (
    API_VERSION,
    GROUP,
    VERSION,
    InvalidResource,
    Job,
    QueueSpec,
    check_job,
    parse_job,
    parse_queue,
)
from kadence_operator.api.durations import parse_duration
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.queues import streams, workers
from kadence_operator.results import fold
from kadence_operator.results.conditions import condition
from kadence_operator.settings import OperatorSettings
from kadence_operator.statuswriter import Status

logger = logging.getLogger(__name__)
FINALIZER = "kadence.io/finalizer"
#: Seconds a kopf per-object worker waits for the next event before it exits (kopf: 5).
KOPF_WORKER_IDLE_TIMEOUT = 0.5
#: Kinds handled by ``on.event`` only, for which kopf need not build a diff base per event
#: (:mod:`kadence_operator.kopfstorage`); tests check that no change handler is registered.
UNTRACKED_KINDS = frozenset({(API_VERSION, Job.crd.kind)})


def _rt(memo: Any) -> runtime.Runtime:
    rt: runtime.Runtime = memo.runtime
    return rt


def _ready(
    *, ok: bool, reason: str, message: str, generation: int, extra: Status | None = None
) -> Any:
    return functools.partial(
        fold.set_ready,
        ok=ok,
        reason=reason,
        message=message,
        generation=generation,
        now=datetime.now(UTC),
        extra=extra,
    )


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
        settings.persistence.diffbase_storage = kopfstorage.DiffBaseStorage(
            untracked=UNTRACKED_KINDS, prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        # kopf keeps one worker task per object until no event came for `idle_timeout` (5 s by
        # default), and the worker's frame holds the object's last event (the whole body) while
        # it waits. Creating 10,000 Jobs at ~250/s kept thousands of bodies alive at once, and
        # the small objects they left between the Jobs' long-lived state stayed as fragmented
        # memory: the settled operator held 191-195 MiB; with 0.5 s, 163 MiB
        # (bench.idle_jobs, docs/benchmarks.md (b)). A later event just starts a new worker.
        settings.queueing.idle_timeout = KOPF_WORKER_IDLE_TIMEOUT
        settings.networking.request_timeout = 30
        # A Queue's status refresh (a timer) may be mid-way through NATS calls when the Queue is
        # deleted; kopf keeps the finalizer until the timer returns and by default looks again
        # only after 60 s, so `kubectl delete queue` hung for a minute. Look again every second.
        settings.background.instant_exit_timeout = 0.5
        settings.background.cancellation_polling = 1.0
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
        # Wait for a status refresh under way: it may restore a missing stream, and must not do
        # so after the streams are deleted here.
        async with _queue_lock(body.metadata.uid or ""):
            if policy == "Delete":
                removed = await streams.delete(rt.js, ref)
                logger.info("deleted streams of %s/%s: %s", ref.namespace, ref.name, removed)
        rt.queue_writer.forget(ref.namespace, ref.name)
        forget_queue(body.metadata.uid or "")

    @kopf.timer(*queues, registry=registry, interval=settings.queue_status_interval, idle=1)
    async def queue_refresh(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        rt = _rt(memo)
        uid = body.metadata.uid or ""
        if not rt.owns(uid):
            return
        async with _queue_lock(uid):
            # kopf sets `stopped` (timers get it too) before it calls the delete handler, which
            # waits for this lock.
            if kwargs.get("stopped") or body.metadata.deletion_timestamp:
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
            rt.jobs.pop(key, None)
            rt.job_writer.forget(*key)
            return
        rt.job_writer.observe(raw)
        rt.jobs[key] = runtime.KnownJob.of(raw)
        if rt.scheduler.refresh(raw):
            return  # a valid Job the scheduler knows, same generation: only its status changed
        uid = body.metadata.uid or ""
        generation = int(body.metadata.get("generation") or 0)
        status = dict(body.get("status") or {})
        ready = condition(list(status.get("conditions") or []), "Ready")
        problems = check_job(raw)
        if not problems:
            try:
                # The scheduler writes Ready=True (or QueueNotReady) when it first looks at it.
                rt.scheduler.upsert(raw, parse_job(raw))
                return
            except scheduling.ScheduleError as error:
                # The validation and the scheduling core share their checks, so this is a bug
                # between them -- but the Job must say it will not run, not go silent.
                problems = [f"spec.schedule: {error}"]
        rt.scheduler.remove(*key)
        message = "; ".join(problems)[:4000]
        changed = ready is None or ready.get("message") != message or ready.get("status") != "False"
        if changed:
            rt.job_writer.submit(
                *key,
                _ready(ok=False, reason="InvalidSpec", message=message, generation=generation),
                uid=uid,
            )
            await events.post(rt.api, obj=raw, reason="InvalidSpec", message=message)


#: Ready reasons a later refresh clears by itself once NATS can take the configuration again.
_RECOVERABLE = ("NatsUnavailable", "StreamRejected")
#: Field manager of the worker Deployments (server-side apply).
FIELD_MANAGER = "kadence-operator"


class _WorkersRejected(Exception):
    """The API server refused the worker Deployment (4xx): a problem of the spec, not transient."""


def _backoff(retry: int) -> float:
    return float(min(60, 2 ** min(retry, 6)))


async def _report(
    rt: runtime.Runtime, body: dict[str, Any], *, reason: str, message: str, event: bool = True
) -> None:
    """``Ready=False`` with ``reason`` and ``message`` (and a Warning Event)."""
    meta = body["metadata"]
    rt.queue_writer.submit(
        meta["namespace"],
        meta["name"],
        _ready(
            ok=False,
            reason=reason,
            message=message[:4000],
            generation=int(meta.get("generation") or 0),
        ),
        uid=meta["uid"],
    )
    if event:
        await events.post(rt.api, obj=body, reason=reason, message=message)


def _ready_unless_refused(*, message: str, generation: int, extra: Status | None = None) -> Any:
    """``Ready=True``, unless the Ready condition holds a problem only a spec change clears."""
    ready = _ready(
        ok=True, reason="Reconciled", message=message, generation=generation, extra=extra
    )

    def mutation(status: Status) -> Status:
        now = condition(list(status.get("conditions") or []), "Ready")
        if (
            now is not None
            and now.get("status") != "True"
            and now.get("reason") not in _RECOVERABLE
        ):
            return status
        result: Status = ready(status)
        return result

    return mutation


def _ready_message(ref: streams.QueueRef, spec: QueueSpec) -> str:
    replicas = f", {spec.replicas} replicas" if spec.replicas > 1 else ""
    return f"stream {ref.stream} with {spec.partitions} partition(s){replicas}"


async def _pending(rt: runtime.Runtime, ref: streams.QueueRef) -> int | None:
    """The Queue's backlog, or None if NATS cannot tell right now."""
    try:
        return sum(c.num_pending or 0 for c in await rt.js.consumers_info(ref.stream))
    except Exception:
        return None


async def _reconcile_queue(rt: runtime.Runtime, body: dict[str, Any], *, retry: int) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    uid, generation = meta["uid"], int(meta.get("generation") or 0)
    try:
        spec = parse_queue(body)
    except InvalidResource as error:
        await _report(rt, body, reason="InvalidSpec", message=str(error))
        return
    ref = streams.QueueRef(*key)
    try:
        changes = await streams.apply(
            rt.js, ref, spec, duplicate_window=rt.settings.duplicate_window
        )
    except streams.ImmutableChange as error:
        await _report(rt, body, reason="ImmutableChange", message=str(error))
        return
    except streams.StreamRejected as error:
        # Not retried here: the status refresh re-applies while Ready is StreamRejected, so the
        # Queue comes up by itself once NATS can host it (a server back, storage freed).
        await _report(rt, body, reason="StreamRejected", message=str(error))
        return
    except Exception as error:  # NATS unreachable, no quorum, timeouts: retry with backoff
        message = f"NATS JetStream is not reachable: {error}"
        await _report(rt, body, reason="NatsUnavailable", message=message, event=retry == 0)
        raise kopf.TemporaryError(message, delay=_backoff(retry)) from error
    for change in changes:
        logger.info("%s/%s: %s", *key, change)
    if spec.workers is not None:
        try:
            await _ensure_workers(rt, body, spec, pending=await _pending(rt, ref))
        except _WorkersRejected as error:
            await _report(rt, body, reason="InvalidSpec", message=str(error))
            return
        except Exception as error:  # the API server is busy or unreachable: retry
            message = f"cannot create or update the worker Deployment: {error}"
            raise kopf.TemporaryError(message[:1000], delay=_backoff(retry)) from error
    subjects = [constants.subject(ref.namespace, ref.name, p) for p in range(spec.partitions)]
    rt.queue_writer.submit(
        *key,
        _ready(
            ok=True,
            reason="Reconciled",
            message=_ready_message(ref, spec),
            generation=generation,
            extra={"stream": ref.stream, "subjects": subjects},
        ),
        uid=uid,
    )
    ack_wait = parse_duration(spec.delivery.ack_wait).total_seconds()
    rt.queues[key] = QueueInfo(key[0], key[1], spec.partitions, ack_wait, True)


_LAST_DRIFT: dict[str, float] = {}
#: uid -> when reading the Queue's stream from NATS started failing (monotonic).
_FAILING_SINCE: dict[str, float] = {}
#: uid -> held by a status refresh and by the delete handler, so the two never interleave.
_QUEUE_LOCKS: dict[str, asyncio.Lock] = {}


def _queue_lock(uid: str) -> asyncio.Lock:
    return _QUEUE_LOCKS.setdefault(uid, asyncio.Lock())


def forget_queue(uid: str) -> None:
    _LAST_DRIFT.pop(uid, None)
    _FAILING_SINCE.pop(uid, None)
    _QUEUE_LOCKS.pop(uid, None)


def _unavailable_grace(rt: runtime.Runtime) -> float:
    """How long reads may fail before the Queue is NatsUnavailable: rides out a failover.

    Killing the leader of an R3 stream left it unanswered for about 11 s in the integration test
    (JetStream's election timeouts are several seconds), so a blip shorter than this keeps Ready.
    """
    return max(20.0, 3 * rt.settings.queue_status_interval)


async def _restore(
    rt: runtime.Runtime,
    body: dict[str, Any],
    spec: QueueSpec,
    *,
    missing: bool,
    recovering: bool,
    ready: dict[str, Any] | None,
) -> bool:
    """Re-apply the Queue's configuration; False when there is no stream to read afterwards."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    ref = streams.QueueRef(*key)
    generation = int(meta.get("generation") or 0)
    try:
        changes = await streams.apply(
            rt.js, ref, spec, duplicate_window=rt.settings.duplicate_window
        )
    except streams.ImmutableChange:
        return not missing  # reported by the reconcile handler; nothing is changed
    except streams.StreamRejected as error:
        message = str(error)
        if (
            ready is None
            or ready.get("reason") != "StreamRejected"
            or ready.get("message") != message
        ):
            await _report(rt, body, reason="StreamRejected", message=message)
        return not missing
    if changes and not recovering:
        message = "restored behind the operator's back: " + ", ".join(changes)
        await events.post(rt.api, obj=body, reason="DriftRestored", message=message)
    if changes or recovering:
        subjects = [constants.subject(ref.namespace, ref.name, p) for p in range(spec.partitions)]
        text = _ready_message(ref, spec) + (" (restored)" if missing and not recovering else "")
        rt.queue_writer.submit(
            *key,
            _ready_unless_refused(
                message=text,
                generation=generation,
                extra={"stream": ref.stream, "subjects": subjects},
            ),
            uid=meta["uid"],
        )
    return True


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
    ready = condition(list((body.get("status") or {}).get("conditions") or []), "Ready")
    recovering = bool(
        ready and ready.get("status") != "True" and ready.get("reason") in _RECOVERABLE
    )
    now = time.monotonic()
    try:
        missing = False
        try:
            await rt.js.stream_info(ref.stream)
        except NotFoundError:
            missing = True
        # A missing stream is restored at once; a Queue waiting for NATS is retried every time.
        if missing or recovering or now - _LAST_DRIFT.get(uid, 0.0) >= rt.settings.drift_interval:
            _LAST_DRIFT[uid] = now
            if not await _restore(
                rt, body, spec, missing=missing, recovering=recovering, ready=ready
            ):
                return
        info = await rt.js.stream_info(ref.stream)
        consumers = await rt.js.consumers_info(ref.stream)
    except Exception as error:
        since = _FAILING_SINCE.setdefault(uid, now)
        if now - since < _unavailable_grace(rt):
            logger.info("%s/%s: cannot read stream %s yet: %s", *key, ref.stream, error)
            return
        rt.queue_writer.submit(
            *key,
            _ready(
                ok=False,
                reason="NatsUnavailable",
                message=f"cannot read or restore stream {ref.stream}: {error}"[:4000],
                generation=generation,
            ),
            uid=uid,
        )
        return
    _FAILING_SINCE.pop(uid, None)
    stats: Status = {
        "messages": info.state.messages,
        "bytes": info.state.bytes,
        "pending": sum(c.num_pending or 0 for c in consumers),
        "ackPending": sum(c.num_ack_pending or 0 for c in consumers),
        "redelivered": sum(c.num_redelivered or 0 for c in consumers),
        "lastSyncTime": timefmt.rfc3339(),
    }
    if spec.dead_letter.enabled:
        try:
            stats["deadLettered"] = (await rt.js.stream_info(ref.dlq_stream)).state.messages
        except NotFoundError:
            stats["deadLettered"] = 0
        except Exception as error:  # keep the last count rather than report 0
            logger.info("%s/%s: cannot read %s: %s", *key, ref.dlq_stream, error)
    if spec.workers is not None:
        try:
            stats["workers"] = await _ensure_workers(rt, body, spec, pending=stats["pending"])
        except _WorkersRejected:
            pass  # reported by the reconcile handler (Ready=False); changes with the spec
        except Exception as error:
            logger.warning("%s/%s: cannot scale the workers: %s", *key, error)
    rt.queue_writer.submit(*key, lambda s: {**s, **stats}, uid=uid)


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


async def _ensure_workers(
    rt: runtime.Runtime, body: dict[str, Any], spec: QueueSpec, *, pending: int | None
) -> dict[str, int]:
    """Create or update (server-side apply) the worker Deployment; returns its worker counts.

    Raises :class:`_WorkersRejected` when the API server refuses the Deployment.
    """
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
    annotations = (existing.metadata.annotations or {}) if existing is not None else {}
    scaled_at = annotations.get(workers.SCALED_AT_ANNOTATION)
    now = datetime.now(UTC)
    decision = workers.decide_replicas(
        spec=spec,
        pending=pending,
        current=current,
        seconds_since_last_scale=workers.seconds_since(scaled_at, now),
    )
    if current != decision.replicas:
        scaled_at = workers.format_time(now)
    connection = rt.connection
    deployment = workers.render_deployment(
        namespace=namespace,
        queue=queue,
        spec=spec,
        replicas=decision.replicas,
        worker_env=workers.worker_env(
            namespace=namespace,
            operator_namespace=rt.settings.operator_namespace,
            nats_urls=connection.nats_urls,
            output_bucket=connection.output_bucket,
            s3_endpoint=connection.s3_endpoint,
            s3_secure=connection.s3_secure,
        ),
        secret_name=rt.settings.worker_secret,
        scaled_at=scaled_at,
    )
    # Only the owner reference: copying the Queue's labels (kopf.adopt) would copy e.g. Argo CD's
    # tracking label, and Argo CD would then prune the Deployment as not in Git.
    kopf.append_owner_reference(deployment, owner=cast(Any, body))

    def write() -> Any:
        # Server-side apply: fields dropped from the spec (env vars, tolerations) go away too.
        return apps.patch_namespaced_deployment(
            name,
            namespace,
            deployment,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    try:
        result = await asyncio.to_thread(write)
    except ApiException as error:
        if error.status in (400, 422):
            raise _WorkersRejected(
                f"spec.workers: Kubernetes refused Deployment {name}: {_api_message(error)}"
            ) from None
        raise
    if current != decision.replicas:
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
