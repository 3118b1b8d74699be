"""kopf handlers for Queue and Job: thin adapters from watch events to the operator's parts.

A bad Queue or Job never crashes the operator and never makes it loop: the problem is written to
the ``Ready`` condition (reason + a message naming the field) with a Warning Event, and the handler
returns; the next change of the object is handled afresh. Only transient trouble (NATS down) is
retried, with a growing delay.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kadence_operator import events, kopfstorage, runtime, scheduling
from kadence_operator.api import (
    API_VERSION,
    GROUP,
    VERSION,
    Job,
    check_job,
    parse_job,
)
from kadence_operator.queues import reconciler
from kadence_operator.results.conditions import condition
from kadence_operator.settings import OperatorSettings

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


def _queues(memo: Any) -> reconciler.QueueReconciler:
    queues: reconciler.QueueReconciler = memo.queues
    return queues


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
        # (bench.idle_jobs, docs/performance.md (b)). A later event just starts a new worker.
        settings.queueing.idle_timeout = KOPF_WORKER_IDLE_TIMEOUT
        settings.networking.request_timeout = 30
        # A Queue's status refresh (a timer) may be mid-way through NATS calls when the Queue is
        # deleted; kopf keeps the finalizer until the timer returns and by default looks again
        # only after 60 s, so `kubectl delete queue` hung for a minute. Look again every second.
        settings.background.instant_exit_timeout = 0.5
        settings.background.cancellation_polling = 1.0
        memo.runtime = await runtime.start(operator_settings)
        memo.queues = reconciler.QueueReconciler(memo.runtime)

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        if getattr(memo, "runtime", None) is not None:
            await runtime.shutdown(_rt(memo))

    # ------------------------------------------------------------------ Queues

    @kopf.on.event(*queues, registry=registry)
    async def queue_seen(event: Any, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _queues(memo).seen(event["type"], dict(body))

    @kopf.on.create(*queues, registry=registry)
    @kopf.on.update(*queues, registry=registry, field="spec")
    @kopf.on.resume(*queues, registry=registry)
    async def queue_reconcile(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        try:
            await _queues(memo).reconcile(dict(body), retry=retry)
        except reconciler.Retry as error:
            raise kopf.TemporaryError(str(error), delay=error.delay) from error.__cause__

    @kopf.on.delete(*queues, registry=registry)
    async def queue_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _queues(memo).delete(dict(body))

    @kopf.timer(*queues, registry=registry, interval=settings.queue_status_interval, idle=1)
    async def queue_refresh(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        # kopf sets `stopped` (timers get it too) before it calls the delete handler.
        await _queues(memo).refresh(dict(body), stopped=bool(kwargs.get("stopped")))

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
                reconciler.ready_condition(
                    ok=False, reason="InvalidSpec", message=message, generation=generation
                ),
                uid=uid,
            )
            await events.post(rt.api, obj=raw, reason="InvalidSpec", message=message)
