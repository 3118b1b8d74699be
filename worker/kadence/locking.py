"""Taking a run's Job Lease before its attempt, for the locking concurrency policies.

Runs of a Job with ``concurrencyPolicy`` ``Forbid``, ``BufferOne`` or ``Replace`` hold the Job's
Lease (:mod:`kadence.leases`) while they run, so two attempts of the Job never overlap. When
another attempt holds it, the message is put back with a delay (the time left on the Lease, at
most ``lease_duration``); for ``Replace`` the holder is asked to stop first and the delay is
shortened to its renew interval. Such a run was not attempted, so nothing is reported. The
attempt renews the Lease while it runs (:mod:`kadence.attempt`); settling releases it after the
ack (:mod:`kadence.settling`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kadence.consumer import QueueMessage
from kadence.metrics import WorkerMetrics
from kadence.protocol import ConcurrencyPolicy, RunRequest

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock, LeaseClient

log = logging.getLogger("kadence.worker")


class JobLocks:
    """Takes the Job Leases of one worker's runs (see the module)."""

    def __init__(
        self,
        leases: LeaseClient | None,
        *,
        duration: int,
        worker: str,
        metrics: WorkerMetrics,
    ) -> None:
        self.leases = leases
        self.duration = duration
        self.worker = worker
        self.metrics = metrics

    async def take(
        self, message: QueueMessage, request: RunRequest, *, task: str, attempt: int
    ) -> tuple[bool, JobLock | None, int | None]:
        """``(proceed, lock, token)``: take the Job's Lease if the policy needs one.

        ``proceed`` is False when the message was put back (another attempt holds the Lease).
        """
        if not request.concurrency_policy.needs_lock or request.job is None:
            return True, None, None
        from kadence.leases import LeaseError, LeaseHeld

        if self.leases is None:
            log.error(
                "run %s of Job %s/%s needs a Lease (concurrencyPolicy %s) but this worker "
                "has no Kubernetes access (KUBECONFIG or in-cluster)",
                request.run_id,
                request.job.namespace,
                request.job.name,
                request.concurrency_policy,
            )
            await message.nak(delay=float(self.duration))
            return False, None, None
        lock = self.leases.lock(
            namespace=request.job.namespace,
            job=request.job.name,
            holder=f"{self.worker}/{request.run_id}/{attempt}",
            duration=self.duration,
        )
        try:
            token = await lock.aacquire()
        except LeaseHeld as held:
            self.metrics.lease_waits.labels(task).inc()
            delay = min(max(held.remaining, 1.0), float(self.duration))
            replace = request.concurrency_policy is ConcurrencyPolicy.REPLACE
            if replace and await self._preempt(lock):
                delay = min(delay, max(1.0, lock.renew_interval))
            log.info("run %s waits %.1fs: %s", request.run_id, delay, held)
            await message.nak(delay=delay)
            return False, None, None
        except LeaseError as error:
            log.warning("could not take lease %s: %s", lock.name, error)
            await message.nak(delay=2.0)
            return False, None, None
        return True, lock, token

    async def _preempt(self, lock: JobLock) -> bool:
        from kadence.leases import LeaseError

        try:
            return await lock.apreempt()
        except LeaseError as error:
            log.warning("could not ask the holder of %s to stop: %s", lock.name, error)
            return False


__all__ = ["JobLocks"]
