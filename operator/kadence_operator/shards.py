"""Shard Leases: this replica's share of the scheduler, held as ``coordination.k8s.io`` Leases.

Every ``lease_retry`` seconds the loop lists the shard and member Leases in the operator's
namespace (one LIST), renews what it holds when a renewal is due, takes free or expired shards up
to its fair share, and gives back any surplus (see :mod:`kadence_operator.shardplan`). A shard
counts as owned only until ``last successful renewal + lease_duration - lease_retry``, so a replica
that cannot reach the API stops firing that shard's Jobs *before* another replica may take it.

A surplus shard is handed over in three steps: this replica stops firing it (``on_change``), writes
what its Jobs have pending in the status writer (``before_release``, so the next holder starts from
the newest ``lastScheduleTime``), and only then clears the Lease's holder. A clean shutdown does the
same for every shard. ``kubectl get leases -n <operator namespace>`` shows who holds what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kadence_operator import kube, shardplan
from kadence_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

LEASE_LABEL = "kadence.io/lease"


def _view(lease: Any) -> shardplan.LeaseView:
    spec = lease.spec
    renew = spec.renew_time if spec is not None else None
    if isinstance(renew, datetime) and renew.tzinfo is None:
        renew = renew.replace(tzinfo=UTC)
    return shardplan.LeaseView(
        name=lease.metadata.name,
        holder=(spec.holder_identity or None) if spec is not None else None,
        renew_time=renew,
        duration_seconds=float((spec.lease_duration_seconds or 0) if spec is not None else 0),
    )


class ShardLeases:
    """Acquires, renews, balances and releases shard Leases for one operator replica."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        settings: OperatorSettings,
        on_change: Callable[[frozenset[int]], Awaitable[None]] | None = None,
        before_release: Callable[[frozenset[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self._settings = settings
        self._me = settings.operator_id
        self._ns = settings.operator_namespace
        self._on_change = on_change
        self._before_release = before_release
        self._valid_until: dict[int, float] = {}
        self._last_renew: dict[int, float] = {}
        self._member_renewed = 0.0
        self._announced: frozenset[int] = frozenset()

    def owned(self) -> frozenset[int]:
        """Shards this replica may fire now."""
        now = time.monotonic()
        return frozenset(s for s, until in self._valid_until.items() if until > now)

    def _lease_body(
        self, name: str, *, role: str, transitions: int, acquire: bool
    ) -> dict[str, Any]:
        now = kube.micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": self._me,
            "leaseDurationSeconds": round(self._settings.lease_duration),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquire:
            spec["acquireTime"] = now
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "labels": {LEASE_LABEL: role, "app.kubernetes.io/part-of": "kadence"},
            },
            "spec": spec,
        }

    def _list(self) -> list[Any]:
        result = self._api.list_namespaced_lease(self._ns, label_selector=LEASE_LABEL)
        return list(result.items)

    def _write(self, existing: Any | None, body: dict[str, Any]) -> bool:
        """Create or resourceVersion-guarded replace; False when another writer won (409)."""
        try:
            if existing is None:
                self._api.create_namespaced_lease(self._ns, cast(Any, body))
            else:
                body["metadata"]["resourceVersion"] = existing.metadata.resource_version
                name = existing.metadata.name
                self._api.replace_namespaced_lease(name, self._ns, cast(Any, body))
        except ApiException as error:
            if error.status in (409, 404):
                return False
            raise
        return True

    def _step(self) -> list[int]:
        """One round: renew, acquire; returns the surplus shards to release (no longer owned)."""
        started = time.monotonic()
        items = self._list()
        by_name = {item.metadata.name: item for item in items}
        members = [
            _view(i) for i in items if (i.metadata.labels or {}).get(LEASE_LABEL) == "member"
        ]
        leases: dict[int, shardplan.LeaseView] = {}
        for item in items:
            shard = shardplan.shard_of_lease(item.metadata.name)
            if shard is not None and shard < self._settings.shards:
                leases[shard] = _view(item)
        now = datetime.now(UTC)

        member_name = f"{shardplan.MEMBER_LEASE_PREFIX}{self._me}"
        if (
            started - self._member_renewed >= self._settings.lease_renew
            or member_name not in by_name
        ):
            existing = by_name.get(member_name)
            transitions = int(existing.spec.lease_transitions or 0) if existing else 0
            body = self._lease_body(
                member_name, role="member", transitions=transitions, acquire=False
            )
            if self._write(existing, body):
                self._member_renewed = started

        plan = shardplan.plan_shards(
            me=self._me,
            shards=self._settings.shards,
            leases=leases,
            members=shardplan.live_members(me=self._me, members=members, now=now),
            now=now,
        )
        valid = started + self._settings.lease_duration - self._settings.lease_retry
        for shard in plan.release:
            # Not owned from now on; the Lease itself is cleared by _release after the hand-over.
            self._valid_until.pop(shard, None)
            self._last_renew.pop(shard, None)
        for shard in plan.renew:
            if started - self._last_renew.get(shard, 0.0) < self._settings.lease_renew:
                continue
            existing = by_name[shardplan.shard_lease_name(shard)]
            body = self._lease_body(
                existing.metadata.name,
                role="shard",
                transitions=int(existing.spec.lease_transitions or 0),
                acquire=False,
            )
            if self._write(existing, body):
                self._valid_until[shard] = valid
                self._last_renew[shard] = started
            else:
                self._valid_until.pop(shard, None)
        for shard in plan.acquire:
            name = shardplan.shard_lease_name(shard)
            existing = by_name.get(name)
            transitions = int(existing.spec.lease_transitions or 0) + 1 if existing else 0
            body = self._lease_body(name, role="shard", transitions=transitions, acquire=True)
            if self._write(existing, body):
                self._valid_until[shard] = valid
                self._last_renew[shard] = started
        # Forget shards someone else holds now.
        for shard, lease in leases.items():
            if lease.holder != self._me and shard not in plan.acquire:
                self._valid_until.pop(shard, None)
        return list(plan.release)

    def _release(self, shards: list[int]) -> None:
        """Clear the holder of each of ``shards`` still held by this replica."""
        for shard in shards:
            name = shardplan.shard_lease_name(shard)
            try:
                existing = self._api.read_namespaced_lease(name, self._ns)
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            if existing.spec is None or existing.spec.holder_identity != self._me:
                continue
            body = self._lease_body(
                name,
                role="shard",
                transitions=int(existing.spec.lease_transitions or 0),
                acquire=False,
            )
            body["spec"]["holderIdentity"] = None
            self._write(existing, body)

    async def _hand_over(self, shards: frozenset[int]) -> None:
        if not shards:
            return
        if self._before_release is not None:
            try:
                await self._before_release(shards)
            except Exception as error:  # the next holder catches up from the status as it is
                logger.warning("hand-over of shards %s: %s", sorted(shards), error)
        await asyncio.to_thread(self._release, sorted(shards))

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the shards balanced until ``stop`` is set; then release them."""
        try:
            while not stop.is_set():
                release: list[int] = []
                try:
                    release = await asyncio.to_thread(self._step)
                except Exception as error:  # keep the loop alive; owned() expires on its own
                    logger.warning("shard lease step failed: %s", error)
                await self._announce()
                if release:
                    try:
                        await self._hand_over(frozenset(release))
                    except Exception as error:  # the Lease then simply expires
                        logger.warning("releasing shards %s failed: %s", release, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._settings.lease_retry)
        finally:
            await self.release_all()

    async def _announce(self) -> None:
        owned = self.owned()
        if owned != self._announced:
            gained, lost = owned - self._announced, self._announced - owned
            logger.info(
                "shards: now %d (gained %s, lost %s)", len(owned), sorted(gained), sorted(lost)
            )
            self._announced = owned
            if self._on_change is not None:
                await self._on_change(owned)

    async def release_all(self) -> None:
        """Give every shard back (clean shutdown), so another replica takes over at once."""
        held = self.owned()
        self._valid_until.clear()
        await self._announce()
        if held and self._before_release is not None:
            with contextlib.suppress(Exception):
                await self._before_release(held)

        def release() -> None:
            for item in self._list():
                if item.spec is None or item.spec.holder_identity != self._me:
                    continue
                with contextlib.suppress(ApiException):
                    if (item.metadata.labels or {}).get(LEASE_LABEL) == "member":
                        self._api.delete_namespaced_lease(item.metadata.name, self._ns)
                        continue
                    body = self._lease_body(
                        item.metadata.name,
                        role="shard",
                        transitions=int(item.spec.lease_transitions or 0),
                        acquire=False,
                    )
                    body["spec"]["holderIdentity"] = None
                    self._write(item, body)

        with contextlib.suppress(Exception):
            await asyncio.to_thread(release)
