"""Shard Leases: this replica's share of the scheduler, held as ``coordination.k8s.io`` Leases.

Every ``lease_retry`` seconds the loop lists the shard and member Leases in the operator's
namespace (one LIST), renews what it holds when a renewal is due, takes free or expired shards up
to its fair share, and gives back any surplus (see :mod:`kadence_operator.shardplan`). A shard
counts as owned only until ``last successful renewal + lease_duration - lease_retry``, so a replica
that cannot reach the API stops firing that shard's Jobs *before* another replica may take it.

Whether another replica's Lease has expired is judged as client-go's leader election does, by
this replica's own clock only: from when it last saw the Lease change (its ``resourceVersion``),
not from the ``renewTime`` the holder wrote with its clock. A replica whose wall clock is behind
(or ahead) therefore neither loses its shards to the others nor takes theirs while it renews.
A Lease seen for the first time counts as renewed then: a new replica waits one lease duration
before it takes the shards of a replica that died before it started.

A surplus shard is handed over in three steps: this replica stops firing it (``on_change``), writes
what its Jobs have pending in the status writer (``before_release``, so the next holder starts from
the newest ``lastScheduleTime``), and only then clears the Lease's holder. A clean shutdown does the
same for every shard. ``kubectl get leases -n <operator namespace>`` shows who holds what.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kadence_operator import kube, shardplan
from kadence_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

LEASE_LABEL = "kadence.io/lease"


#: A Lease as the API server sends it (JSON). The loop reads raw JSON instead of the client's
#: V1Lease models: decoding 33 models every 2 s and 32 after the renewals every 10 s took long
#: enough, in a thread holding the GIL, to delay the event loop's fires by ~250 ms each time.
Lease = dict[str, Any]


def _name(lease: Lease) -> str:
    return str(lease["metadata"]["name"])


def _holder(lease: Lease) -> str | None:
    return (lease.get("spec") or {}).get("holderIdentity") or None


def _transitions(lease: Lease) -> int:
    return int((lease.get("spec") or {}).get("leaseTransitions") or 0)


def _role(lease: Lease) -> str | None:
    return (lease["metadata"].get("labels") or {}).get(LEASE_LABEL)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _view(lease: Lease) -> shardplan.LeaseView:
    spec = lease.get("spec") or {}
    return shardplan.LeaseView(
        name=_name(lease),
        holder=spec.get("holderIdentity") or None,
        renew_time=_parse_time(spec.get("renewTime")),
        duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
    )


def _return_connection(response: Any) -> None:
    """Give the connection of an unread ``_preload_content=False`` response back to urllib3's pool.

    Left unread, the connection stays checked out and the next call opens a new one: a TLS
    handshake per Lease write, in a thread that holds the GIL the scheduler's loop needs.
    """
    response.drain_conn()
    response.release_conn()


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
        #: Shards another live replica held at the last successful round.
        self._elsewhere: frozenset[int] = frozenset()
        #: Shards being handed over: no longer fired, still held until released.
        self._handing: frozenset[int] = frozenset()
        #: Each other holder's Lease: its ``resourceVersion`` and when (monotonic) this replica
        #: first saw it (see the module: expiry by this replica's clock).
        self._observed: dict[str, tuple[str, float]] = {}

    def owned(self) -> frozenset[int]:
        """Shards this replica may fire now."""
        now = time.monotonic()
        return frozenset(s for s, until in self._valid_until.items() if until > now)

    def ownership(self, shard: int) -> bool | None:
        """May this replica write what it decided for the Jobs of ``shard`` (a status guard,
        :mod:`kadence_operator.statuswriter`)? True while it holds the shard (or hands it
        over); False once another replica holds it; None when it does not know (its hold ran
        out and no round has succeeded since, e.g. while the API server is down)."""
        if shard in self._handing or shard in self.owned():
            return True
        return False if shard in self._elsewhere else None

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

    def _list(self) -> list[Lease]:
        response: Any = self._api.list_namespaced_lease(  # raw: an urllib3 response
            self._ns, label_selector=LEASE_LABEL, _preload_content=False
        )
        return list(json.loads(response.data).get("items") or [])

    def _write(self, existing: Lease | None, body: dict[str, Any]) -> bool:
        """Create or resourceVersion-guarded replace; False when another writer won (409).

        The answer is not decoded (``_preload_content=False``): only success matters. Its
        connection goes back to the pool (:func:`_return_connection`).
        """
        try:
            if existing is None:
                response = self._api.create_namespaced_lease(
                    self._ns, cast(Any, body), _preload_content=False
                )
            else:
                body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                response = self._api.replace_namespaced_lease(
                    _name(existing), self._ns, cast(Any, body), _preload_content=False
                )
        except ApiException as error:
            if error.status in (409, 404):
                return False
            raise
        _return_connection(response)
        return True

    def _step(self) -> list[int]:
        """One round: renew, acquire; returns the surplus shards to release (no longer owned)."""
        started = time.monotonic()
        items = self._list()
        now = datetime.now(UTC)
        seen = time.monotonic()
        by_name = {_name(item): item for item in items}
        views = {_name(item): self._observe(item, now=now, seen=seen) for item in items}
        self._observed = {n: o for n, o in self._observed.items() if n in by_name}
        members = [views[_name(i)] for i in items if _role(i) == "member"]
        leases: dict[int, shardplan.LeaseView] = {}
        for item in items:
            shard = shardplan.shard_of_lease(_name(item))
            if shard is not None and shard < self._settings.shards:
                leases[shard] = views[_name(item)]

        member_name = f"{shardplan.MEMBER_LEASE_PREFIX}{self._me}"
        if (
            started - self._member_renewed >= self._settings.lease_renew
            or member_name not in by_name
        ):
            existing = by_name.get(member_name)
            transitions = _transitions(existing) if existing else 0
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
                _name(existing), role="shard", transitions=_transitions(existing), acquire=False
            )
            if self._write(existing, body):
                self._valid_until[shard] = valid
                self._last_renew[shard] = started
            else:
                self._valid_until.pop(shard, None)
        for shard in plan.acquire:
            name = shardplan.shard_lease_name(shard)
            existing = by_name.get(name)
            transitions = _transitions(existing) + 1 if existing else 0
            body = self._lease_body(name, role="shard", transitions=transitions, acquire=True)
            if self._write(existing, body):
                self._valid_until[shard] = valid
                self._last_renew[shard] = started
        # Forget shards someone else holds now.
        elsewhere = set()
        for shard, lease in leases.items():
            if lease.holder != self._me and shard not in plan.acquire:
                self._valid_until.pop(shard, None)
                if lease.holder is not None and lease.live_at(now):
                    elsewhere.add(shard)
        self._elsewhere = frozenset(elsewhere)
        return list(plan.release)

    def _observe(self, item: Lease, *, now: datetime, seen: float) -> shardplan.LeaseView:
        """The Lease as the plan sees it: another holder's renewal dated by this replica's
        clock, at the moment this replica first saw the Lease's current version."""
        view = _view(item)
        if view.holder is None or view.holder == self._me:
            return view
        version = str(item["metadata"].get("resourceVersion") or "")
        observed = self._observed.get(view.name)
        if observed is None or observed[0] != version:
            observed = self._observed[view.name] = (version, seen)
        return dataclasses.replace(view, renew_time=now - timedelta(seconds=seen - observed[1]))

    def _release(self, shards: list[int]) -> None:
        """Clear the holder of each of ``shards`` still held by this replica."""
        for shard in shards:
            name = shardplan.shard_lease_name(shard)
            try:
                response: Any = self._api.read_namespaced_lease(
                    name, self._ns, _preload_content=False
                )
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            existing: Lease = json.loads(response.data)
            if _holder(existing) != self._me:
                continue
            body = self._lease_body(
                name, role="shard", transitions=_transitions(existing), acquire=False
            )
            body["spec"]["holderIdentity"] = None
            self._write(existing, body)

    async def _hand_over(self, shards: frozenset[int]) -> None:
        if not shards:
            return
        self._handing |= shards
        try:
            if self._before_release is not None:
                try:
                    await self._before_release(shards)
                except Exception as error:  # the next holder catches up from the status as is
                    logger.warning("hand-over of shards %s: %s", sorted(shards), error)
        finally:
            self._handing -= shards
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
            self._handing |= held
            try:
                with contextlib.suppress(Exception):
                    await self._before_release(held)
            finally:
                self._handing -= held

        def release() -> None:
            for item in self._list():
                if _holder(item) != self._me:
                    continue
                with contextlib.suppress(ApiException):
                    if _role(item) == "member":
                        _return_connection(
                            self._api.delete_namespaced_lease(
                                _name(item), self._ns, _preload_content=False
                            )
                        )
                        continue
                    body = self._lease_body(
                        _name(item), role="shard", transitions=_transitions(item), acquire=False
                    )
                    body["spec"]["holderIdentity"] = None
                    self._write(item, body)

        with contextlib.suppress(Exception):
            await asyncio.to_thread(release)
