"""Taking a run's Job Lease before its attempt, for the locking concurrency policies.

Runs of a Job with ``concurrencyPolicy`` ``Forbid``, ``BufferOne`` or ``Replace`` hold the Job's
Lease (:mod:`kadence.leases`) while they run, so two attempts of the Job never overlap. When
another attempt holds it, the message is put back with a delay (the time left on the Lease, at
most ``lease_duration``); for ``Replace`` the holder is asked to stop first and the delay is
shortened to its renew interval. Such a run was not attempted, so nothing is reported. The
attempt renews the Lease while it runs (:mod:`kadence.attempt`); settling releases it after the
ack (:mod:`kadence.settling`).

``Replace`` orders its runs by slot (:meth:`~kadence.leases.LeaseClient.lock` given
``scheduled_at``): a run older than the newest that took the Lease was replaced by it while it
waited, and ends ``Cancelled`` without an attempt (:attr:`Taken.superseded`) instead of
waiting, running late or stopping the newer run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kadence.consumer import QueueMessage
from kadence.metrics import WorkerMetrics
from kadence.protocol import ConcurrencyPolicy, RunRequest

if TYPE_CHECKING:  # leases imports the Kubernetes client: only load it when a run needs a lock
    from kadence.leases import JobLock, LeaseClient

log = logging.getLogger("kadence.worker")


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`JobLocks.take` decided for one message."""

    #: Run the attempt (with ``lock`` and its fencing ``token`` when the policy needs one).
    proceed: bool
    lock: JobLock | None = None
    token: int | None = None
    #: ``Replace``: a newer run took the Lease; this one ends ``Cancelled`` (why, for the report).
    superseded: str | None = None


_WAIT = Taken(proceed=False)
_FREE = Taken(proceed=True)


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
    ) -> Taken:
        """Take the Job's Lease if the policy needs one.

        Not ``proceed`` when the message was put back (another attempt holds the Lease) or the
        run was ``superseded`` (``Replace``: the caller settles it).
        """
        if not request.concurrency_policy.needs_lock or request.job is None:
            return _FREE
        from kadence.leases import LeaseError, LeaseHeld, LeaseSuperseded

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
            return _WAIT
        holder = f"{self.worker}/{request.run_id}/{attempt}"
        replace = request.concurrency_policy is ConcurrencyPolicy.REPLACE
        # Replace orders its runs by slot: an older run never takes the Lease after a newer one.
        lock = self.leases.lock(
            namespace=request.job.namespace,
            job=request.job.name,
            holder=holder,
            duration=self.duration,
            scheduled_at=request.scheduled_at if replace else None,
        )
        try:
            token = await lock.aacquire()
            return Taken(proceed=True, lock=lock, token=token)
        except LeaseSuperseded as newer:
            return self._superseded(request, newer)
        except LeaseHeld as held:
            self.metrics.lease_waits.labels(task).inc()
            delay = min(max(held.remaining, 1.0), float(self.duration))
            if replace:
                try:
                    if await lock.apreempt():
                        delay = min(delay, max(1.0, lock.renew_interval))
                except LeaseSuperseded as newer:
                    return self._superseded(request, newer)
                except LeaseError as error:
                    log.warning("could not ask the holder of %s to stop: %s", lock.name, error)
            log.info("run %s waits %.1fs: %s", request.run_id, delay, held)
            await message.nak(delay=delay)
            return _WAIT
        except LeaseError as error:
            log.warning("could not take lease %s: %s", lock.name, error)
            await message.nak(delay=2.0)
            return _WAIT

    @staticmethod
    def _superseded(request: RunRequest, newer: Exception) -> Taken:
        log.info("run %s was replaced before it started: %s", request.run_id, newer)
        return Taken(proceed=False, superseded=str(newer))


__all__ = ["JobLocks", "Taken"]
