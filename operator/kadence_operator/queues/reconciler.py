"""The Queue reconciler: a Queue's streams, consumers, dead-letter stream, worker Deployment and
live status, with the per-Queue state that needs (the kopf handlers only translate events).

A bad Queue never crashes the operator and never makes it loop: its problem is written to the
``Ready`` condition (reason + a message naming the field) with a Warning Event. Only transient
trouble (NATS down, the API server busy) raises :class:`Retry`, which the handler turns into
kopf's retry with a growing delay.
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
from kadence_operator import events, runtime, timefmt
from kadence_operator.api import InvalidResource, QueueSpec, parse_queue
from kadence_operator.api.durations import parse_duration
from kadence_operator.identity import permissions
from kadence_operator.jobs.runs import QueueInfo
from kadence_operator.queues import streams, workers
from kadence_operator.results import fold
from kadence_operator.results.conditions import condition
from kadence_operator.statuswriter import Status

logger = logging.getLogger(__name__)


class Retry(Exception):
    """Transient trouble: try the reconcile again in ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def ready_condition(
    *, ok: bool, reason: str, message: str, generation: int, extra: Status | None = None
) -> Any:
    """The ``Ready`` condition as a status mutation (:func:`fold.set_ready`), timed now."""
    return functools.partial(
        fold.set_ready,
        ok=ok,
        reason=reason,
        message=message,
        generation=generation,
        now=datetime.now(UTC),
        extra=extra,
    )


#: Ready reasons a later refresh clears by itself once NATS can take the configuration again.
_RECOVERABLE = ("NatsUnavailable", "StreamRejected")
#: Field manager of the worker Deployments (server-side apply).
FIELD_MANAGER = "kadence-operator"


class _WorkersRejected(Exception):
    """The API server refused the worker Deployment (4xx): a problem of the spec, not transient."""


def _backoff(retry: int) -> float:
    return float(min(60, 2 ** min(retry, 6)))


def _ready_unless_refused(*, message: str, generation: int, extra: Status | None = None) -> Any:
    """``Ready=True``, unless the Ready condition holds a problem only a spec change clears."""
    ready = ready_condition(
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


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


class QueueReconciler:
    """Reconciles the Queues: one per operator process, holding what it knows per Queue."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self._rt = rt
        #: uid -> when the Queue's configuration was last re-applied (monotonic).
        self._last_drift: dict[str, float] = {}
        #: uid -> when reading the Queue's stream from NATS started failing (monotonic).
        self._failing_since: dict[str, float] = {}
        #: uid -> held by a status refresh and by the delete handler, so the two never interleave.
        self._locks: dict[str, asyncio.Lock] = {}

    def seen(self, event: str, body: dict[str, Any]) -> None:
        """A watch event of a Queue: what the scheduler needs to know of it (partitions, ack
        wait, whether it is Ready)."""
        rt = self._rt
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event == "DELETED":
            rt.queues.pop(key, None)
            return
        rt.queue_writer.observe(body)
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

    async def delete(self, body: dict[str, Any]) -> None:
        """The Queue is being deleted: its streams go too, unless ``deletionPolicy: Retain``."""
        meta = body["metadata"]
        ref = streams.QueueRef(meta["namespace"], meta["name"])
        policy = (body.get("spec") or {}).get("deletionPolicy", "Delete")
        # Wait for a status refresh under way: it may restore a missing stream, and must not do
        # so after the streams are deleted here.
        async with self._lock(meta["uid"]):
            if policy == "Delete":
                removed = await streams.delete(self._rt.js, ref)
                logger.info("deleted streams of %s/%s: %s", ref.namespace, ref.name, removed)
        self._rt.queue_writer.forget(ref.namespace, ref.name)
        self._forget(meta["uid"])

    async def refresh(self, body: dict[str, Any], *, stopped: bool = False) -> None:
        """The periodic look at a Queue this replica owns: restore drift, write live status."""
        meta = body["metadata"]
        uid = meta["uid"]
        if not self._rt.owns(uid):
            return
        async with self._lock(uid):
            # The delete handler waits for this lock; a Queue being deleted is left alone.
            if stopped or meta.get("deletionTimestamp"):
                return
            await self._refresh(body)

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def _forget(self, uid: str) -> None:
        self._last_drift.pop(uid, None)
        self._failing_since.pop(uid, None)
        self._locks.pop(uid, None)

    async def _report(
        self, body: dict[str, Any], *, reason: str, message: str, event: bool = True
    ) -> None:
        """``Ready=False`` with ``reason`` and ``message`` (and a Warning Event)."""
        meta = body["metadata"]
        self._rt.queue_writer.submit(
            meta["namespace"],
            meta["name"],
            ready_condition(
                ok=False,
                reason=reason,
                message=message[:4000],
                generation=int(meta.get("generation") or 0),
            ),
            uid=meta["uid"],
        )
        if event:
            await events.post(self._rt.api, obj=body, reason=reason, message=message)

    async def _pending(self, ref: streams.QueueRef) -> int | None:
        """The Queue's backlog, or None if NATS cannot tell right now."""
        try:
            return sum(c.num_pending or 0 for c in await self._rt.js.consumers_info(ref.stream))
        except Exception:
            return None

    async def reconcile(self, body: dict[str, Any], *, retry: int) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        uid, generation = meta["uid"], int(meta.get("generation") or 0)
        try:
            spec = parse_queue(body)
        except InvalidResource as error:
            await self._report(body, reason="InvalidSpec", message=str(error))
            return
        ref = streams.QueueRef(*key)
        try:
            changes = await streams.apply(
                self._rt.js, ref, spec, duplicate_window=self._rt.settings.duplicate_window
            )
        except streams.ImmutableChange as error:
            await self._report(body, reason="ImmutableChange", message=str(error))
            return
        except streams.StreamRejected as error:
            # Not retried here: the status refresh re-applies while Ready is StreamRejected, so the
            # Queue comes up by itself once NATS can host it (a server back, storage freed).
            await self._report(body, reason="StreamRejected", message=str(error))
            return
        except Exception as error:  # NATS unreachable, no quorum, timeouts: retry with backoff
            message = f"NATS JetStream is not reachable: {error}"
            await self._report(body, reason="NatsUnavailable", message=message, event=retry == 0)
            raise Retry(message, delay=_backoff(retry)) from error
        for change in changes:
            logger.info("%s/%s: %s", *key, change)
        if spec.workers is not None:
            try:
                await self._ensure_workers(body, spec, pending=await self._pending(ref))
            except _WorkersRejected as error:
                await self._report(body, reason="InvalidSpec", message=str(error))
                return
            except Exception as error:  # the API server is busy or unreachable: retry
                message = f"cannot create or update the worker Deployment: {error}"
                raise Retry(message[:1000], delay=_backoff(retry)) from error
        subjects = [constants.subject(ref.namespace, ref.name, p) for p in range(spec.partitions)]
        self._rt.queue_writer.submit(
            *key,
            ready_condition(
                ok=True,
                reason="Reconciled",
                message=_ready_message(ref, spec),
                generation=generation,
                extra={"stream": ref.stream, "subjects": subjects},
            ),
            uid=uid,
        )
        ack_wait = parse_duration(spec.delivery.ack_wait).total_seconds()
        self._rt.queues[key] = QueueInfo(key[0], key[1], spec.partitions, ack_wait, True)

    def _unavailable_grace(self) -> float:
        """How long reads may fail before the Queue is NatsUnavailable: rides out a failover.

        Killing the leader of an R3 stream left it unanswered for about 11 s in the integration
        test (JetStream's election timeouts are several seconds), so a shorter blip keeps Ready.
        """
        return max(20.0, 3 * self._rt.settings.queue_status_interval)

    async def _restore(
        self,
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
                self._rt.js, ref, spec, duplicate_window=self._rt.settings.duplicate_window
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
                await self._report(body, reason="StreamRejected", message=message)
            return not missing
        if changes and not recovering:
            message = "restored behind the operator's back: " + ", ".join(changes)
            await events.post(self._rt.api, obj=body, reason="DriftRestored", message=message)
        if changes or recovering:
            subjects = [
                constants.subject(ref.namespace, ref.name, p) for p in range(spec.partitions)
            ]
            text = _ready_message(ref, spec) + (" (restored)" if missing and not recovering else "")
            self._rt.queue_writer.submit(
                *key,
                _ready_unless_refused(
                    message=text,
                    generation=generation,
                    extra={"stream": ref.stream, "subjects": subjects},
                ),
                uid=meta["uid"],
            )
        return True

    async def _refresh(self, body: dict[str, Any]) -> None:
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
                await self._rt.js.stream_info(ref.stream)
            except NotFoundError:
                missing = True
            # A missing stream is restored at once; a Queue waiting for NATS is retried every time.
            if (
                missing
                or recovering
                or now - self._last_drift.get(uid, 0.0) >= self._rt.settings.drift_interval
            ):
                self._last_drift[uid] = now
                if not await self._restore(
                    body, spec, missing=missing, recovering=recovering, ready=ready
                ):
                    return
            info = await self._rt.js.stream_info(ref.stream)
            consumers = await self._rt.js.consumers_info(ref.stream)
        except Exception as error:
            since = self._failing_since.setdefault(uid, now)
            if now - since < self._unavailable_grace():
                logger.info("%s/%s: cannot read stream %s yet: %s", *key, ref.stream, error)
                return
            self._rt.queue_writer.submit(
                *key,
                ready_condition(
                    ok=False,
                    reason="NatsUnavailable",
                    message=f"cannot read or restore stream {ref.stream}: {error}"[:4000],
                    generation=generation,
                ),
                uid=uid,
            )
            return
        self._failing_since.pop(uid, None)
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
                stats["deadLettered"] = (
                    await self._rt.js.stream_info(ref.dlq_stream)
                ).state.messages
            except NotFoundError:
                stats["deadLettered"] = 0
            except Exception as error:  # keep the last count rather than report 0
                logger.info("%s/%s: cannot read %s: %s", *key, ref.dlq_stream, error)
        if spec.workers is not None:
            try:
                stats["workers"] = await self._ensure_workers(body, spec, pending=stats["pending"])
            except _WorkersRejected:
                pass  # reported by the reconcile handler (Ready=False); changes with the spec
            except Exception as error:
                logger.warning("%s/%s: cannot scale the workers: %s", *key, error)
        self._rt.queue_writer.submit(*key, lambda s: {**s, **stats}, uid=uid)

    def _render_workers(
        self, namespace: str, queue: str, spec: QueueSpec, *, replicas: int, scaled_at: str | None
    ) -> dict[str, Any]:
        connection = self._rt.connection
        return workers.render_deployment(
            namespace=namespace,
            queue=queue,
            spec=spec,
            replicas=replicas,
            worker_env=workers.worker_env(
                namespace=namespace,
                operator_namespace=self._rt.settings.operator_namespace,
                nats_urls=connection.nats_urls,
                output_bucket=connection.output_bucket,
                s3_endpoint=connection.s3_endpoint,
                s3_secure=connection.s3_secure,
            ),
            secret_name=self._rt.settings.worker_secret,
            scaled_at=scaled_at,
            nats_token_audience=self._rt.settings.nats_token_audience,
        )

    async def _ensure_workers(
        self, body: dict[str, Any], spec: QueueSpec, *, pending: int | None
    ) -> dict[str, int]:
        """Create or update (server-side apply) the worker Deployment; returns its worker counts.

        Raises :class:`_WorkersRejected` when the API server refuses the Deployment.
        """
        meta = body["metadata"]
        namespace, queue = meta["namespace"], meta["name"]
        apps = client.AppsV1Api(self._rt.api)
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
        try:
            deployment = self._render_workers(
                namespace, queue, spec, replicas=decision.replicas, scaled_at=scaled_at
            )
        except permissions.UnusableName as error:
            raise _WorkersRejected(
                f"spec.workers.serviceAccountName: {error}; with NATS identities the workers' "
                "ServiceAccount name is part of their reply subjects, so it must have no dots"
            ) from None
        # Only the owner reference: copying the Queue's labels (kopf.adopt) would copy e.g. Argo
        # CD's tracking label, and Argo CD would then prune the Deployment as not in Git.
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
