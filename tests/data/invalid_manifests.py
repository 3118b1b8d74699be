"""Manifests the Kadence API must reject, and where.

Each entry of :data:`INVALID_MANIFESTS` is an :class:`InvalidManifest` (a NamedTuple, so it also
unpacks as ``(id, manifest, field, rejection)``):

- ``manifest``: a complete Queue or Job object (no namespace: apply it with ``-n``);
- ``field``: a substring of the field path the error must name, e.g. ``spec.schedule.cron``;
- ``rejection``: who rejects it.

  * ``"schema"``: the API server refuses it (CRD schema, enum, pattern, range or CEL rule), and
    the pydantic models refuse it the same way;
  * ``"semantic"``: the API server stores it (the schema cannot tell), the operator's semantic
    validators (``kadence_operator.api.validation``) report it, and the operator sets
    ``Ready=False`` instead of acting on it.

:data:`INVALID_UPDATES` holds updates that only transition rules (``oldSelf``) reject, so only the
API server can check them: ``(id, old, new, field)``.

:data:`VALID_MANIFESTS` holds objects both must accept.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, NamedTuple

Rejection = Literal["schema", "semantic"]
Manifest = dict[str, Any]


class InvalidManifest(NamedTuple):
    id: str
    manifest: Manifest
    field: str
    rejection: Rejection


class InvalidUpdate(NamedTuple):
    id: str
    old: Manifest
    new: Manifest
    field: str


def _merge(base: Manifest, patch: Manifest) -> Manifest:
    """Deep-merge ``patch`` into a copy of ``base``; a None value deletes the key."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def job(name: str, **spec: Any) -> Manifest:
    """A valid Job (every 5 minutes on queue ``reports``) with ``spec`` merged in."""
    base: Manifest = {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "queue": "reports",
            "task": "reports.build",
            "payload": {"report": "daily"},
            "schedule": {"interval": "5m"},
        },
    }
    return _merge(base, {"spec": spec})


def queue(name: str, **spec: Any) -> Manifest:
    """A valid Queue (3 partitions, operator-run workers) with ``spec`` merged in."""
    base: Manifest = {
        "apiVersion": "kadence.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {
            "partitions": 3,
            "workers": {"image": "ghcr.io/example/reports:1.0", "app": "app:app"},
        },
    }
    return _merge(base, {"spec": spec})


def _schedule(**schedule: Any) -> dict[str, Any]:
    return {"schedule": schedule}


_BIG_PAYLOAD = {"blob": "x" * (64 * 1024)}

INVALID_MANIFESTS: list[InvalidManifest] = [
    # --- Job: durations ------------------------------------------------------------------------
    InvalidManifest(
        "job-interval-words",
        job("bad-interval-words", **_schedule(interval="5 minutes")),
        "spec.schedule.interval",
        "schema",
    ),
    InvalidManifest(
        "job-interval-no-unit",
        job("bad-interval-no-unit", **_schedule(interval="300")),
        "spec.schedule.interval",
        "schema",
    ),
    InvalidManifest(
        "job-interval-negative",
        job("bad-interval-negative", **_schedule(interval="-5s")),
        "spec.schedule.interval",
        "schema",
    ),
    InvalidManifest(
        "job-interval-below-1s",
        job("bad-interval-short", **_schedule(interval="500ms")),
        "spec.schedule.interval",
        "schema",
    ),
    InvalidManifest(
        "job-timeout-words",
        job("bad-timeout", timeout="ten minutes"),
        "spec.timeout",
        "schema",
    ),
    InvalidManifest(
        "job-jitter-not-shorter-than-interval",
        job("bad-jitter", **_schedule(interval="5s", jitter="10s")),
        "spec.schedule.jitter",
        "schema",
    ),
    InvalidManifest(
        "job-catchup-window-words",
        job("bad-window", catchUp={"window": "an hour"}),
        "spec.catchUp.window",
        "schema",
    ),
    # --- Job: schedule shape -------------------------------------------------------------------
    InvalidManifest(
        "job-interval-and-cron",
        job("bad-both", **_schedule(interval="5m", cron="*/5 * * * *")),
        "spec.schedule",
        "schema",
    ),
    InvalidManifest(
        "job-neither-interval-nor-cron",
        job("bad-neither", schedule={"interval": None, "timeZone": "UTC"}),
        "spec.schedule",
        "schema",
    ),
    InvalidManifest(
        "job-cron-7-fields",
        job("bad-cron-seven", schedule={"interval": None, "cron": "0 0 12 * * MON 2025"}),
        "spec.schedule.cron",
        "schema",
    ),
    InvalidManifest(
        "job-cron-4-fields",
        job("bad-cron-four", schedule={"interval": None, "cron": "0 12 * *"}),
        "spec.schedule.cron",
        "schema",
    ),
    InvalidManifest(
        "job-cron-unknown-shorthand",
        job("bad-cron-shorthand", schedule={"interval": None, "cron": "@often"}),
        "spec.schedule.cron",
        "schema",
    ),
    InvalidManifest(
        "job-end-before-start",
        job(
            "bad-end-before-start",
            **_schedule(startAt="2025-06-01T00:00:00Z", endAt="2025-05-01T00:00:00Z"),
        ),
        "spec.schedule.endAt",
        "schema",
    ),
    InvalidManifest(
        "job-start-at-words",
        job("bad-start-words", **_schedule(startAt="tomorrow")),
        "spec.schedule.startAt",
        "schema",
    ),
    InvalidManifest(
        "job-start-at-without-offset",
        job("bad-start-naive", **_schedule(startAt="2025-06-01T00:00:00")),
        "spec.schedule.startAt",
        "schema",
    ),
    InvalidManifest(
        "job-time-zone-path",
        job("bad-tz-path", schedule={"interval": None, "cron": "0 3 * * *", "timeZone": "../x"}),
        "spec.schedule.timeZone",
        "schema",
    ),
    # --- Job: enums ----------------------------------------------------------------------------
    InvalidManifest(
        "job-concurrency-policy-unknown",
        job("bad-concurrency", concurrencyPolicy="Sometimes"),
        "spec.concurrencyPolicy",
        "schema",
    ),
    InvalidManifest(
        "job-concurrency-policy-wrong-case",
        job("bad-concurrency-case", concurrencyPolicy="forbid"),
        "spec.concurrencyPolicy",
        "schema",
    ),
    InvalidManifest(
        "job-catchup-policy-unknown",
        job("bad-catchup", catchUp={"policy": "Some"}),
        "spec.catchUp.policy",
        "schema",
    ),
    InvalidManifest(
        "job-spread-unknown",
        job("bad-spread", **_schedule(spread="random")),
        "spec.schedule.spread",
        "schema",
    ),
    # --- Job: numbers and types ----------------------------------------------------------------
    InvalidManifest(
        "job-max-attempts-negative",
        job("bad-attempts-negative", retryPolicy={"maxAttempts": -1}),
        "spec.retryPolicy.maxAttempts",
        "schema",
    ),
    InvalidManifest(
        "job-max-attempts-zero",
        job("bad-attempts-zero", retryPolicy={"maxAttempts": 0}),
        "spec.retryPolicy.maxAttempts",
        "schema",
    ),
    InvalidManifest(
        "job-backoff-factor-below-1",
        job("bad-factor", retryPolicy={"backoff": {"factor": 0.5}}),
        "spec.retryPolicy.backoff.factor",
        "schema",
    ),
    InvalidManifest(
        "job-backoff-initial-over-max",
        job("bad-backoff", retryPolicy={"backoff": {"initial": "10m", "max": "1m"}}),
        "spec.retryPolicy.backoff.initial",
        "schema",
    ),
    InvalidManifest(
        "job-history-limit-over-100",
        job("bad-history-high", historyLimits={"succeeded": 101}),
        "spec.historyLimits.succeeded",
        "schema",
    ),
    InvalidManifest(
        "job-history-limit-negative",
        job("bad-history-negative", historyLimits={"failed": -1}),
        "spec.historyLimits.failed",
        "schema",
    ),
    InvalidManifest(
        "job-suspend-string",
        job("bad-suspend", suspend="yes"),
        "spec.suspend",
        "schema",
    ),
    # --- Job: references and names -------------------------------------------------------------
    InvalidManifest(
        "job-missing-queue",
        job("bad-no-queue", queue=None),
        "spec.queue",
        "schema",
    ),
    InvalidManifest(
        "job-missing-task",
        job("bad-no-task", task=None),
        "spec.task",
        "schema",
    ),
    InvalidManifest(
        "job-queue-not-dns-label",
        job("bad-queue-name", queue="Reports_Queue"),
        "spec.queue",
        "schema",
    ),
    InvalidManifest(
        "job-task-with-spaces",
        job("bad-task-name", task="build reports!"),
        "spec.task",
        "schema",
    ),
    InvalidManifest(
        "job-input-without-key",
        job("bad-input", input={"bucket": "raw-data"}),
        "spec.input.key",
        "schema",
    ),
    InvalidManifest(
        "job-name-too-long",
        job("nightly-" + "x" * 60),
        "metadata.name",
        "schema",
    ),
    # --- Job: backfill -------------------------------------------------------------------------
    InvalidManifest(
        "job-backfill-to-before-from",
        job(
            "bad-backfill-range",
            backfill={"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        ),
        "spec.backfill.to",
        "schema",
    ),
    InvalidManifest(
        "job-backfill-without-schedule",
        job(
            "bad-backfill-once",
            schedule=None,
            backfill={"from": "2025-01-01T00:00:00Z", "to": "2025-02-01T00:00:00Z"},
        ),
        "spec.backfill",
        "schema",
    ),
    # --- Job: semantic (stored by the API server, rejected by the operator) --------------------
    InvalidManifest(
        "job-payload-over-64KiB",
        job("bad-payload-size", payload=_BIG_PAYLOAD),
        "spec.payload",
        "semantic",
    ),
    InvalidManifest(
        "job-time-zone-unknown",
        job("bad-tz", schedule={"interval": None, "cron": "0 3 * * *", "timeZone": "Mars/Base"}),
        "spec.schedule.timeZone",
        "semantic",
    ),
    InvalidManifest(
        "job-cron-minute-61",
        job("bad-cron-61", schedule={"interval": None, "cron": "61 * * * *"}),
        "spec.schedule.cron",
        "semantic",
    ),
    InvalidManifest(
        "job-cron-second-60",
        job("bad-cron-second", schedule={"interval": None, "cron": "60 * * * * *"}),
        "spec.schedule.cron",
        "semantic",
    ),
    InvalidManifest(
        "job-cron-february-30",
        job("bad-cron-never", schedule={"interval": None, "cron": "0 0 30 2 *"}),
        "spec.schedule.cron",
        "semantic",
    ),
    InvalidManifest(
        "job-cron-hash-token",
        job("bad-cron-hash", schedule={"interval": None, "cron": "H * * * *"}),
        "spec.schedule.cron",
        "semantic",
    ),
    InvalidManifest(
        "job-cron-bad-weekday-name",
        job("bad-cron-weekday", schedule={"interval": None, "cron": "0 3 * * FUNDAY"}),
        "spec.schedule.cron",
        "semantic",
    ),
    # --- Queue: schema -------------------------------------------------------------------------
    InvalidManifest(
        "queue-partitions-0", queue("bad-partitions-0", partitions=0), "spec.partitions", "schema"
    ),
    InvalidManifest(
        "queue-partitions-65",
        queue("bad-partitions-65", partitions=65),
        "spec.partitions",
        "schema",
    ),
    InvalidManifest(
        "queue-partitions-string",
        queue("bad-partitions-string", partitions="3"),
        "spec.partitions",
        "schema",
    ),
    InvalidManifest(
        "queue-replicas-2", queue("bad-replicas", replicas=2), "spec.replicas", "schema"
    ),
    InvalidManifest(
        "queue-storage-disk", queue("bad-storage", storage="disk"), "spec.storage", "schema"
    ),
    InvalidManifest(
        "queue-discard-unknown",
        queue("bad-discard", retention={"discard": "oldest"}),
        "spec.retention.discard",
        "schema",
    ),
    InvalidManifest(
        "queue-retention-max-age-words",
        queue("bad-retention-age", retention={"maxAge": "1 week"}),
        "spec.retention.maxAge",
        "schema",
    ),
    InvalidManifest(
        "queue-ack-wait-no-unit",
        queue("bad-ack-wait", delivery={"ackWait": "30"}),
        "spec.delivery.ackWait",
        "schema",
    ),
    InvalidManifest(
        "queue-max-deliver-0",
        queue("bad-max-deliver", delivery={"maxDeliver": 0}),
        "spec.delivery.maxDeliver",
        "schema",
    ),
    InvalidManifest(
        "queue-backoff-not-shorter-than-max-deliver",
        queue("bad-backoff", delivery={"maxDeliver": 2, "backoff": ["1s", "5s"]}),
        "spec.delivery.backoff",
        "schema",
    ),
    InvalidManifest(
        "queue-backoff-entry-words",
        queue("bad-backoff-entry", delivery={"backoff": ["1s", "soon"]}),
        "spec.delivery.backoff",
        "schema",
    ),
    InvalidManifest(
        "queue-deletion-policy-unknown",
        queue("bad-deletion", deletionPolicy="Orphan"),
        "spec.deletionPolicy",
        "schema",
    ),
    InvalidManifest(
        "queue-autoscale-min-over-max",
        queue("bad-autoscale", workers={"autoscale": {"min": 5, "max": 2}}),
        "spec.workers.autoscale.min",
        "schema",
    ),
    InvalidManifest(
        "queue-autoscale-without-max",
        queue("bad-autoscale-max", workers={"autoscale": {"min": 1}}),
        "spec.workers.autoscale.max",
        "schema",
    ),
    InvalidManifest(
        "queue-replicas-and-autoscale",
        queue("bad-scaling", workers={"replicas": 2, "autoscale": {"max": 4}}),
        "spec.workers.autoscale",
        "schema",
    ),
    InvalidManifest(
        "queue-workers-without-image",
        queue("bad-no-image", workers={"image": None}),
        "spec.workers.image",
        "schema",
    ),
    InvalidManifest(
        "queue-workers-app-without-attribute",
        queue("bad-app", workers={"app": "app"}),
        "spec.workers.app",
        "schema",
    ),
    InvalidManifest(
        "queue-workers-neither-app-nor-command",
        queue("bad-no-app", workers={"app": None}),
        "spec.workers.app",
        "schema",
    ),
    InvalidManifest(
        "queue-workers-concurrency-0",
        queue("bad-concurrency", workers={"concurrency": 0}),
        "spec.workers.concurrency",
        "schema",
    ),
    InvalidManifest(
        "queue-resources-bad-quantity",
        queue("bad-quantity", workers={"resources": {"requests": {"cpu": "lots"}}}),
        "spec.workers.resources.requests",
        "schema",
    ),
    InvalidManifest(
        "queue-toleration-exists-with-value",
        queue(
            "bad-toleration",
            workers={"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]},
        ),
        "spec.workers.tolerations[0].value",
        "schema",
    ),
    InvalidManifest(
        "queue-name-with-dot",
        queue("reports.v2"),
        "metadata.name",
        "schema",
    ),
    # --- Queue: semantic -----------------------------------------------------------------------
    InvalidManifest(
        "queue-duplicate-env",
        queue(
            "bad-env",
            workers={"env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "LOG_LEVEL"}]},
        ),
        "spec.workers.env[1].name",
        "semantic",
    ),
]

INVALID_UPDATES: list[InvalidUpdate] = [
    InvalidUpdate(
        "queue-storage-changed",
        queue("immutable-storage", storage="file"),
        queue("immutable-storage", storage="memory"),
        "spec.storage",
    ),
]

VALID_MANIFESTS: list[tuple[str, Manifest]] = [
    ("job-minimal-once", job("ok-once", schedule=None, payload=None)),
    ("job-interval", job("ok-interval")),
    ("job-interval-1s", job("ok-interval-1s", **_schedule(interval="1s"))),
    ("job-interval-compound", job("ok-interval-compound", **_schedule(interval="1h30m"))),
    (
        "job-cron-berlin",
        job(
            "ok-cron",
            schedule={"interval": None, "cron": "0 3 * * MON-FRI", "timeZone": "Europe/Berlin"},
        ),
    ),
    (
        "job-cron-seconds",
        job("ok-cron-seconds", schedule={"interval": None, "cron": "*/10 * * * * *"}),
    ),
    ("job-cron-shorthand", job("ok-cron-daily", schedule={"interval": None, "cron": "@daily"})),
    (
        "job-everything",
        job(
            "ok-everything",
            partitionKey="tenant-42",
            input={"bucket": "raw-data", "key": "2025/01/31.csv"},
            output={"bucket": "reports", "prefix": "daily/"},
            schedule={
                "interval": "1h",
                "startAt": "2025-01-01T00:00:00+01:00",
                "endAt": "2026-01-01T00:00:00Z",
                "jitter": "30s",
                "spread": "hash",
            },
            suspend=True,
            concurrencyPolicy="BufferOne",
            catchUp={"policy": "All", "window": "6h"},
            retryPolicy={
                "maxAttempts": 5,
                "backoff": {"initial": "2s", "factor": 3, "max": "10m"},
                "nonRetryableErrors": ["ValueError"],
            },
            timeout="15m",
            historyLimits={"succeeded": 10, "failed": 0},
            backfill={"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"},
        ),
    ),
    ("job-payload-list", job("ok-payload-list", payload=[1, "two", {"three": None}])),
    ("queue-minimal", {**queue("ok-minimal"), "spec": {}}),
    ("queue-default", queue("ok-default")),
    (
        "queue-everything",
        queue(
            "ok-everything",
            partitions=64,
            replicas=3,
            storage="memory",
            retention={"maxAge": "168h", "maxMessages": 100000, "maxBytes": 1073741824},
            delivery={"ackWait": "1m", "maxDeliver": 4, "backoff": ["1s", "10s", "1m"]},
            deadLetter={"enabled": False, "maxAge": "720h"},
            workers={
                "image": "ghcr.io/example/reports:1.0",
                "command": ["python", "-m", "reports.worker"],
                "args": ["--verbose"],
                "concurrency": 8,
                "autoscale": {"min": 0, "max": 10, "backlogPerWorker": 50, "cooldown": "2m"},
                "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                "resources": {
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi", "nvidia.com/gpu": 1},
                },
                "serviceAccountName": "reports-worker",
                "nodeSelector": {"kubernetes.io/arch": "amd64"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch"}],
            },
            deletionPolicy="Retain",
        ),
    ),
]
