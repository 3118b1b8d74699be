"""The workload of a fault run: its Queues, Jobs and workers, as plain data (no I/O).

Every Job has a fixed ``startAt`` and ``endAt``, so the slots its schedule has are known exactly
(:func:`slots`) and every one of them must end up run, skipped or missed: no slot is in flight at
either edge of the window, and the slot accounting needs no tolerance.

Task durations vary per run (drawn from the run id in :mod:`tests.faults.faultapp`) and some are
longer than the interval, so ``Forbid`` skips, ``BufferOne`` buffers and ``Replace`` cancels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

NAMESPACE = "default"
GROUP_VERSION = "kadence.io/v1alpha1"
TASK = "faults.work"
#: Attempts per run: lease waits and killed attempts each cost one (docs/worker.md), so there is
#: room for several faults hitting one run before it fails for good.
MAX_ATTEMPTS = 10
#: The Queue's own limit, above MAX_ATTEMPTS as docs/worker.md asks.
MAX_DELIVER = 20
#: Seconds a worker's Job Lease lasts without renewal (``--lease-duration``).
WORKER_LEASE_DURATION = 6
#: Finished runs kept in ``status.runs`` (the API's maximum), so a bounded run keeps them all.
HISTORY_LIMIT = 100


@dataclass(frozen=True)
class QueuePlan:
    name: str
    ack_wait: int  # seconds
    partitions: int = 2


@dataclass(frozen=True)
class JobPlan:
    name: str
    queue: str
    interval: int  # seconds
    policy: str  # concurrencyPolicy
    catch_up: str  # catchUp.policy
    work: tuple[float, float]  # the task's duration range, seconds

    @property
    def period(self) -> timedelta:
        return timedelta(seconds=self.interval)


@dataclass(frozen=True)
class WorkerPlan:
    name: str
    queue: str
    concurrency: int


QUEUES = (QueuePlan("faults-a", ack_wait=5), QueuePlan("faults-b", ack_wait=5))

#: Every concurrencyPolicy and every catchUp policy at least once, on two Queues.
JOBS = (
    JobPlan("allow-all", "faults-a", 3, "Allow", "All", (0.5, 1.5)),
    JobPlan("allow-none", "faults-b", 2, "Allow", "None", (0.2, 0.8)),
    JobPlan("forbid-one", "faults-a", 3, "Forbid", "One", (2.0, 5.0)),
    JobPlan("forbid-all", "faults-b", 5, "Forbid", "All", (3.0, 7.0)),
    JobPlan("bufferone-all", "faults-b", 4, "BufferOne", "All", (3.0, 6.0)),
    JobPlan("replace-none", "faults-a", 4, "Replace", "None", (2.0, 6.0)),
    JobPlan("replace-one", "faults-b", 5, "Replace", "One", (3.0, 7.0)),
)

#: Two workers share the first Queue; the second has one, so freezing it stalls its Queue.
WORKERS = (
    WorkerPlan("w1", "faults-a", 2),
    WorkerPlan("w2", "faults-a", 2),
    WorkerPlan("w3", "faults-b", 4),
)

#: The Job the final "still serves" check triggers.
PROBE_JOB = "allow-all"


def queue_plan(name: str) -> QueuePlan:
    return next(q for q in QUEUES if q.name == name)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def queue_manifest(queue: QueuePlan, *, replicas: int = 1) -> dict[str, Any]:
    """The Queue; ``replicas`` (3 against a 3-node NATS cluster) copies of its streams."""
    spec: dict[str, Any] = {
        "partitions": queue.partitions,
        "delivery": {"ackWait": f"{queue.ack_wait}s", "maxDeliver": MAX_DELIVER},
    }
    if replicas != 1:  # against one nats-server, the manifest the default run always had
        spec["replicas"] = replicas
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Queue",
        "metadata": {"name": queue.name, "namespace": NAMESPACE},
        "spec": spec,
    }


def job_manifest(job: JobPlan, *, start_at: datetime, end_at: datetime) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Job",
        "metadata": {"name": job.name, "namespace": NAMESPACE},
        "spec": {
            "queue": job.queue,
            "task": TASK,
            "payload": {"min_seconds": job.work[0], "max_seconds": job.work[1]},
            "schedule": {
                "interval": f"{job.interval}s",
                "startAt": rfc3339(start_at),
                "endAt": rfc3339(end_at),
            },
            "concurrencyPolicy": job.policy,
            "catchUp": {"policy": job.catch_up},
            "retryPolicy": {
                "maxAttempts": MAX_ATTEMPTS,
                "backoff": {"initial": "1s", "factor": 2, "max": "4s"},
            },
            "timeout": "30s",
            "historyLimits": {"succeeded": HISTORY_LIMIT, "failed": HISTORY_LIMIT},
        },
    }


def slots(*, start_at: datetime, end_at: datetime, period: timedelta) -> list[datetime]:
    """The schedule's slots in ``[start_at, end_at]`` (both inclusive, as ``startAt``/``endAt``)."""
    found = []
    slot = start_at
    while slot <= end_at:
        found.append(slot)
        slot += period
    return found
