"""Per-Job locks on Kubernetes Leases, so that locking concurrency policies never overlap runs.

For a Job with ``concurrencyPolicy`` Forbid, BufferOne or Replace, the worker running an attempt
holds the ``coordination.k8s.io/v1`` Lease ``kadence-job-<job>`` in the Job's namespace:

- **acquire**: create the Lease if absent; if its holder is live (``renewTime + duration > now``)
  the attempt must wait (:class:`LeaseHeld`); if the holder expired, take it over with a
  ``resourceVersion``-guarded replace that increments ``leaseTransitions``. A 409 means another
  worker won the race: held.
- **renew** every ``duration / 3``; a Lease found with another holder is lost (:class:`LeaseLost`),
  and the attempt must stop. A preemption request (Replace) stops the attempt too; once the
  attempt has ended (:meth:`JobLock.attempt_ended`) the renewals go on until the release and
  the newer run waits for it.
- **release**: clear the holder at the end of the attempt.
- **order** (``Replace`` only): a lock given the run's ``scheduled_at`` records the newest slot
  that took the Lease in an annotation (kept across holders) and refuses an older run with
  :class:`LeaseSuperseded`: a run that waited for the Lease while a newer one took it must not
  run after it, let alone stop it.

``leaseTransitions`` after acquisition is the attempt's **fencing token**: it grows with every new
holder, so a report carrying a smaller token than one already seen comes from a stale holder.

This is the only module of :mod:`kadence` that imports the Kubernetes client (an optional
dependency: ``pip install kadence[leases]``). The client is synchronous; the ``a``-prefixed
methods run it in a thread. A worker needs only ``get``, ``create`` and ``update`` on
``leases.coordination.k8s.io`` in its namespace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kadence.config import Settings, user_agent
from kadence.constants import (
    LEASE_JOB_LABEL,
    LEASE_NEWEST_ANNOTATION,
    LEASE_PREEMPT_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    lease_name,
)

log = logging.getLogger("kadence.leases")

# The client's config loaders are unannotated; give them the types they have.
_new_client_from_config: Callable[..., Any] = k8s_config.new_client_from_config
_load_incluster_config: Callable[..., None] = k8s_config.load_incluster_config

#: The worker's ``User-Agent``, hence the field manager of its Lease writes.
USER_AGENT = user_agent("kadence-worker")

DEFAULT_LEASE_SECONDS = 15
#: (connect, read) timeouts of every API call: a stuck apiserver must not outlast the lease.
_TIMEOUT = (3.0, 5.0)
#: How often a conflicting write (409) is re-read and retried before giving up.
_CONFLICT_RETRIES = 3


class LeaseError(RuntimeError):
    """The API server could not be reached or refused the request (transient)."""


class LeaseHeld(LeaseError):
    """Another live holder has the Lease; retry after ``remaining`` seconds."""

    def __init__(self, holder: str, remaining: float) -> None:
        super().__init__(f"lease held by {holder!r} for {remaining:.1f}s more")
        self.holder = holder
        self.remaining = remaining


class LeaseSuperseded(LeaseError):
    """A newer run (a later ``scheduled_at``) already took the Lease (concurrencyPolicy Replace)."""

    def __init__(self, newest: str) -> None:
        super().__init__(f"a newer run (scheduled at {newest}) took the lease")
        self.newest = newest


class LeaseLost(LeaseError):
    """This holder no longer has the Lease (it expired and someone else took it)."""


class LeasePreempted(LeaseLost):
    """A newer run asked this holder to stop (concurrencyPolicy Replace)."""

    def __init__(self, by: str) -> None:
        super().__init__(f"preempted by {by!r}")
        self.by = by


def _now() -> datetime:
    return datetime.now(UTC)


def _micro_time(moment: datetime) -> str:
    # MicroTime must carry exactly six fractional digits; isoformat() drops them when zero.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read from the API server."""

    namespace: str
    name: str
    holder: str | None
    duration: int
    renew_time: datetime | None
    acquire_time: datetime | None
    transitions: int
    resource_version: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, lease: Any) -> LeaseRecord:
        spec = lease.spec
        meta = lease.metadata
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            holder=spec.holder_identity or None,
            duration=int(spec.lease_duration_seconds or DEFAULT_LEASE_SECONDS),
            renew_time=spec.renew_time,
            acquire_time=spec.acquire_time,
            transitions=int(spec.lease_transitions or 0),
            resource_version=meta.resource_version,
            labels=dict(meta.labels or {}),
            annotations=dict(meta.annotations or {}),
        )

    def remaining(self, now: datetime | None = None) -> float:
        """Seconds until the holder's claim expires (<= 0: expired or free)."""
        if self.holder is None or self.renew_time is None:
            return 0.0
        expiry = self.renew_time + timedelta(seconds=self.duration)
        return (expiry - (now or _now())).total_seconds()

    def live(self, now: datetime | None = None) -> bool:
        return self.remaining(now) > 0


class LeaseClient:
    """Leases through the synchronous Kubernetes client."""

    def __init__(self, api_client: Any) -> None:
        # Typed as Any: request bodies are plain dicts (see JobLock._body), which the client
        # accepts but its annotations (V1Lease) do not admit.
        self.api: Any = k8s.CoordinationV1Api(api_client)

    @classmethod
    def _tagged(cls, api_client: Any) -> LeaseClient:
        """A client whose writes name the worker as their field manager (:data:`USER_AGENT`)."""
        api_client.user_agent = USER_AGENT
        return cls(api_client)

    @classmethod
    def from_kubeconfig(cls, path: str) -> LeaseClient:
        return cls._tagged(_new_client_from_config(config_file=path))

    @classmethod
    def in_cluster(cls) -> LeaseClient:
        configuration = k8s.Configuration()
        _load_incluster_config(client_configuration=configuration)
        return cls._tagged(k8s.ApiClient(configuration))

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaseClient | None:
        """``KUBECONFIG`` if set, else the pod's service account; None outside any cluster."""
        if settings.kubeconfig:
            return cls.from_kubeconfig(settings.kubeconfig)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return None

    def read(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            lease = self.api.read_namespaced_lease(name, namespace, _request_timeout=_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return None
            raise LeaseError(f"reading lease {namespace}/{name}: {_reason(error)}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"reading lease {namespace}/{name}: {error}") from error
        return LeaseRecord.from_api(lease)

    def lock(
        self,
        *,
        namespace: str,
        job: str,
        holder: str,
        duration: int = DEFAULT_LEASE_SECONDS,
        scheduled_at: datetime | None = None,
    ) -> JobLock:
        """A lock on the Job's Lease. Given the run's ``scheduled_at`` (Replace), the lock is
        ordered: a run older than the newest that took the Lease never gets it
        (:class:`LeaseSuperseded`)."""
        return JobLock(
            self,
            namespace=namespace,
            job=job,
            holder=holder,
            duration=duration,
            scheduled_at=scheduled_at,
        )


def _reason(error: ApiException) -> str:
    return f"{error.status} {error.reason}"


class JobLock:
    """One attempt's hold on its Job's Lease."""

    def __init__(
        self,
        client: LeaseClient,
        *,
        namespace: str,
        job: str,
        holder: str,
        duration: int = DEFAULT_LEASE_SECONDS,
        scheduled_at: datetime | None = None,
    ) -> None:
        if duration < 1:
            raise ValueError("lease duration must be at least 1 second")
        self.client = client
        self.namespace = namespace
        self.job = job
        self.name = lease_name(job)
        self.holder = holder
        self.duration = duration
        #: The run's slot, in the annotation's sortable form; None: no order (not Replace).
        self.order = _micro_time(scheduled_at) if scheduled_at is not None else None
        #: ``leaseTransitions`` when acquired: the fencing token.
        self.token: int | None = None
        self._renewed_at = 0.0  # monotonic time of the last successful acquire/renew
        #: The Lease as this holder last wrote it. Renew, verify and release first write over
        #: exactly that version (no read): if anyone else wrote since (a take-over, a preemption
        #: request), the API server answers 409 and they read and decide as before.
        self._mine: LeaseRecord | None = None
        #: The background renewals (:meth:`keeping`), until the release.
        self._keeper: asyncio.Future[NoReturn] | None = None
        #: Whether the attempt ended (:meth:`attempt_ended`): preemption requests are ignored.
        self._ended = False

    def __repr__(self) -> str:
        return f"JobLock({self.namespace}/{self.name}, holder={self.holder!r}, token={self.token})"

    @property
    def renew_interval(self) -> float:
        return self.duration / 3

    def _body(
        self,
        *,
        holder: str | None,
        acquire_time: datetime | None,
        renew_time: datetime,
        transitions: int,
        resource_version: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {LEASE_JOB_LABEL: self.job[:63], MANAGED_BY_LABEL: MANAGED_BY},
        }
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        if annotations:
            metadata["annotations"] = annotations
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.duration,
            "renewTime": _micro_time(renew_time),
            "leaseTransitions": transitions,
        }
        if holder is not None:
            spec["holderIdentity"] = holder
        if acquire_time is not None:
            spec["acquireTime"] = _micro_time(acquire_time)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def _rewrite(self, record: LeaseRecord, *, holder: str | None) -> dict[str, Any]:
        """``record`` renewed now with ``holder``, guarded by its ``resourceVersion``; a
        preemption request is dropped, the newest run's slot kept."""
        return self._body(
            holder=holder,
            acquire_time=record.acquire_time,
            renew_time=_now(),
            transitions=record.transitions,
            resource_version=record.resource_version,
            annotations=self._ordered(record.annotations),
        )

    def _ordered(self, annotations: dict[str, str]) -> dict[str, str]:
        """The annotations a new write keeps: the newest slot, now at least this run's."""
        newest = annotations.get(LEASE_NEWEST_ANNOTATION)
        if self.order is not None and (newest is None or self.order > newest):
            newest = self.order
        return {LEASE_NEWEST_ANNOTATION: newest} if newest is not None else {}

    def _check_order(self, record: LeaseRecord) -> None:
        newest = record.annotations.get(LEASE_NEWEST_ANNOTATION)
        if self.order is not None and newest is not None and newest > self.order:
            raise LeaseSuperseded(newest)

    def _replace(self, body: dict[str, Any]) -> LeaseRecord:
        """A ``resourceVersion``-guarded replace; ApiException 409 if someone wrote first."""
        try:
            lease = self.client.api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=_TIMEOUT
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"updating lease {self.namespace}/{self.name}: {error}") from error
        return LeaseRecord.from_api(lease)

    def acquire(self) -> int:
        """Take the Lease; returns the fencing token or raises :class:`LeaseHeld` (or
        :class:`LeaseSuperseded` for an ordered lock older than the Lease's newest run)."""
        now = _now()
        current = self.client.read(self.namespace, self.name)
        if current is None:
            try:
                created = self.client.api.create_namespaced_lease(
                    self.namespace,
                    self._body(
                        holder=self.holder,
                        acquire_time=now,
                        renew_time=now,
                        transitions=0,
                        annotations=self._ordered({}),
                    ),
                    _request_timeout=_TIMEOUT,
                )
            except ApiException as error:
                if error.status == 409:  # created by someone else a moment ago
                    raise LeaseHeld("(concurrent creator)", self.duration) from None
                raise LeaseError(f"creating lease: {_reason(error)}") from error
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise LeaseError(f"creating lease: {error}") from error
            return self._acquired(LeaseRecord.from_api(created))
        if current.holder == self.holder:
            return self._acquired(current)  # already ours (a retried acquire)
        self._check_order(current)
        if current.live(now):
            raise LeaseHeld(current.holder or "", current.remaining(now))
        body = self._body(
            holder=self.holder,
            acquire_time=now,
            renew_time=now,
            transitions=current.transitions + 1,
            resource_version=current.resource_version,
            annotations=self._ordered(current.annotations),
        )
        try:
            taken = self._replace(body)
        except ApiException as error:
            if error.status in (404, 409):  # deleted or updated under us: someone else is active
                raise LeaseHeld("(concurrent writer)", self.duration) from None
            raise LeaseError(f"taking over lease: {_reason(error)}") from error
        if current.holder is not None:
            log.info("took over expired lease %s from %s", self.name, current.holder)
        return self._acquired(taken)

    def _acquired(self, record: LeaseRecord) -> int:
        self.token = record.transitions
        self._renewed_at = time.monotonic()
        self._mine = record
        return record.transitions

    def _overwrite_mine(self, *, holder: str | None) -> bool:
        """Write over this holder's own last version; False if it changed since (or unknown).

        Saves the read before each renew/verify/release while nobody else touches the Lease.
        """
        mine = self._mine
        if mine is None or mine.holder != self.holder:
            return False
        body = self._rewrite(mine, holder=holder)
        try:
            written = self._replace(body)
        except ApiException as error:
            if error.status in (404, 409):
                self._mine = None
                return False  # the slow path reads it and tells what happened
            raise LeaseError(f"updating lease: {_reason(error)}") from error
        self._mine = written if holder == self.holder else None
        return True

    def renew(self, *, check_preempted: bool = True) -> None:
        """Extend the hold; :class:`LeaseLost`/:class:`LeasePreempted` if it must stop."""
        if self._overwrite_mine(holder=self.holder):
            # Unchanged since our own last write, so no preemption request arrived either.
            self._renewed_at = time.monotonic()
            return
        for _ in range(_CONFLICT_RETRIES):
            current = self.client.read(self.namespace, self.name)
            if current is None or current.holder != self.holder:
                holder = current.holder if current is not None else None
                raise LeaseLost(f"lease {self.name} is now held by {holder!r}")
            by = current.annotations.get(LEASE_PREEMPT_ANNOTATION)
            if check_preempted and by is not None:
                raise LeasePreempted(by)
            body = self._rewrite(current, holder=self.holder)
            try:
                self._mine = self._replace(body)
            except ApiException as error:
                if error.status == 409:
                    continue  # changed since we read it (a preemption request?): look again
                if error.status == 404:
                    raise LeaseLost(f"lease {self.name} was deleted") from None
                raise LeaseError(f"renewing lease: {_reason(error)}") from error
            self._renewed_at = time.monotonic()
            return
        raise LeaseError(f"lease {self.name} kept changing while renewing")

    def verify(self) -> None:
        """Raise :class:`LeaseLost` unless this holder still has the Lease (renewing it).

        Called before an attempt reports success: a holder that was paused past its lease (and
        maybe replaced) finds out here. A pending preemption does not matter any more.
        """
        self.renew(check_preempted=False)

    def release(self) -> None:
        """Clear the holder (only if it is still us); the transitions count stays."""
        if self._overwrite_mine(holder=None):
            return
        for _ in range(_CONFLICT_RETRIES):
            current = self.client.read(self.namespace, self.name)
            if current is None or current.holder != self.holder:
                return
            body = self._rewrite(current, holder=None)
            try:
                self._replace(body)
                self._mine = None
                return
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 404:
                    return
                raise LeaseError(f"releasing lease: {_reason(error)}") from error

    def preempt(self) -> bool:
        """Ask the current live holder to stop (Replace); True if the request was recorded.

        Raises :class:`LeaseSuperseded` when the holder is a newer run than this ordered lock's.
        """
        current = self.client.read(self.namespace, self.name)
        if current is None or current.holder in (None, self.holder) or not current.live():
            return False
        self._check_order(current)  # never stop a newer run
        if current.annotations.get(LEASE_PREEMPT_ANNOTATION) == self.holder:
            return True
        annotations = dict(current.annotations)
        annotations[LEASE_PREEMPT_ANNOTATION] = self.holder
        body = self._body(
            holder=current.holder,
            acquire_time=current.acquire_time,
            renew_time=current.renew_time or _now(),
            transitions=current.transitions,
            resource_version=current.resource_version,
            annotations=annotations,
        )
        body["spec"]["leaseDurationSeconds"] = current.duration
        try:
            self._replace(body)
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise LeaseError(f"preempting lease: {_reason(error)}") from error
        return True

    # -- async wrappers: the Kubernetes client blocks, the worker's event loop must not ------------

    async def aacquire(self) -> int:
        return await asyncio.to_thread(self.acquire)

    async def arenew(self) -> None:
        await asyncio.to_thread(self.renew)

    async def averify(self) -> None:
        await asyncio.to_thread(self.verify)

    async def arelease(self) -> None:
        keeper = self.stop_keeping()
        if keeper is not None:
            await asyncio.gather(keeper, return_exceptions=True)
        await asyncio.to_thread(self.release)

    def keeping(self) -> asyncio.Future[NoReturn]:
        """:meth:`keep` in the background, started at the first call and going on until
        :meth:`arelease` (or :meth:`stop_keeping`): it ends (raises) only when the hold is lost.
        An attempt watches it; its run stays held while the report and the ack are on their
        way, so the run's redelivery cannot take the Lease and run it a second time meanwhile.
        (Concurrent renewals and the release are safe: each writes over a ``resourceVersion``.)"""
        if self._keeper is None:
            self._keeper = asyncio.ensure_future(self.keep())
            # Retrieved here: after the attempt nobody awaits a hold lost while settling.
            self._keeper.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._keeper

    def attempt_ended(self) -> None:
        """The attempt's handler is done: hold the Lease until :meth:`arelease` whatever run
        asks for it meanwhile.

        While the handler runs, a newer run's preemption request (Replace) stops it. After that
        the run is only reporting its end and acking its message; giving the Lease up then (the
        renewals used to stop at the request) let it run out while a report waited on a cut-off
        NATS connection, and the run's redelivery took it and ran the run a second time (soak
        seed 3: Succeeded, then Cancelled). The newer run takes the Lease at the release. A
        keeper already stopped by a preemption request is started again.
        """
        self._ended = True
        keeper = self._keeper
        if (
            keeper is not None
            and keeper.done()
            and not keeper.cancelled()
            and isinstance(keeper.exception(), LeasePreempted)
        ):
            self._keeper = None
            self.keeping()

    def expires_in(self) -> float:
        """Seconds until this hold runs out by this worker's clock, from its last renewal."""
        return self._renewed_at + self.duration - time.monotonic()

    def stop_keeping(self) -> asyncio.Future[NoReturn] | None:
        """Stop the background renewals (the Lease then runs out on its own, or is released)."""
        keeper = self._keeper
        if keeper is not None:
            keeper.cancel()
        return keeper

    async def apreempt(self) -> bool:
        return await asyncio.to_thread(self.preempt)

    async def keep(self) -> NoReturn:
        """Renew every ``duration / 3`` until cancelled; raises when the hold is lost.

        Transient API errors are retried until the hold would have expired: after that nobody can
        tell whether another worker took over, so the attempt must stop (:class:`LeaseLost`).
        A preemption request raises :class:`LeasePreempted` until :meth:`attempt_ended`.
        """
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                await asyncio.to_thread(self.renew, check_preempted=not self._ended)
            except LeaseLost:
                raise
            except LeaseError as error:
                if self.expires_in() <= self.renew_interval / 2:
                    raise LeaseLost(f"could not renew lease {self.name}: {error}") from error
                log.warning("renewing lease %s failed (%s); retrying", self.name, error)
