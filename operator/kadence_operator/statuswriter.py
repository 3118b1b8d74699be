"""One coalesced, conflict-safe status PATCH per object per interval.

Everything that changes a Job's or Queue's status — the scheduler recording a dispatch, the result
folder recording an outcome, a handler setting a condition — submits a *mutation*: a pure
function from the current status to the new one. The writer collects mutations per object and, at
most once per ``interval`` seconds per object, applies all of them in order to the latest known
status and sends a single merge PATCH guarded by ``metadata.resourceVersion``:

- 409 Conflict → re-read the object and apply the same mutations again (nothing is lost);
- 429 Too Many Requests → wait ``Retry-After`` (or back off) and retry;
- 404 Not Found → the object is gone; the submitters are told (late results are dropped cleanly).

Each :meth:`StatusWriter.submit` returns a future that resolves once the mutation is persisted,
so a result message is acknowledged only after its effect is in the API server.

A mutation may carry a *guard*, asked right before each PATCH that would include it: the
scheduler's decisions are guarded by the ownership of the Job's shard
(:meth:`~kadence_operator.shards.ShardLeases.ownership`). ``True`` writes it; ``None`` (not known
now: the shard's Lease could not be renewed in time, e.g. while the API server was down) holds it
back for a later round; ``False`` (another replica holds the shard) drops it: the decision was made
by a replica that is no longer the Job's scheduler, and the new one decides those slots from the
status itself. So a replica cut off from the API server never lands its stale decisions on top of
its successor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from kadence_operator import kube
from kadence_operator.metrics import OperatorMetrics

logger = logging.getLogger(__name__)

Status = dict[str, Any]
#: How many objects are written at once (PATCHes in flight on the event loop, and connections).
CONCURRENCY = 8
Mutation = Callable[[Status], Status]
Key = tuple[str, str]  # (namespace, name)
#: Whether a guarded mutation may be written now: True yes, None not yet, False never.
Guard = Callable[[], bool | None]


class ObjectGone(Exception):
    """The object was deleted (or replaced by a new one with another uid) before the write."""


#: A pending mutation, the future its submitter waits on (None: posted, nobody waits) and its
#: guard (None: always written).
_Queued = tuple[Mutation, "asyncio.Future[None] | None", Guard | None]


class NotOwner(Exception):
    """A guarded mutation was dropped: its guard said it must never be written."""


@dataclass(slots=True)
class _Pending:
    mutations: list[_Queued] = field(default_factory=list)
    uid: str | None = None
    #: The pending mutation of each ``supersede`` tag (see :meth:`StatusWriter.submit`).
    tagged: dict[str, _Queued] = field(default_factory=dict)
    #: Set by the last PATCH built: guarded mutations left out of it (held back, dropped).
    held: list[_Queued] = field(default_factory=list)
    dropped: list[_Queued] = field(default_factory=list)


def _retry_after(value: str | None) -> float:
    """Seconds to wait after a 429: the server's ``Retry-After`` (whole seconds), at most 10."""
    return min(10.0, float(value)) if value and value.isdigit() else 1.0


def _follow(follower: asyncio.Future[None], leader: asyncio.Future[None]) -> None:
    if follower.done():
        return
    if leader.cancelled():
        follower.cancel()
    elif (error := leader.exception()) is not None:
        follower.set_exception(error)
    else:
        follower.set_result(None)


def merge_patch(old: Status, new: Status) -> Status:
    """The JSON merge patch turning ``old`` into ``new`` (removed keys become ``None``)."""
    patch: Status = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation")


@dataclass(frozen=True)
class Cached:
    """What the writer keeps of an object: identity, ``resourceVersion``, the status as JSON.

    A whole body (spec, ``managedFields``) is several kilobytes of Python objects, and even the
    status alone is five times larger as objects than as compact JSON; with 10,000 Jobs that is
    the difference between tens and hundreds of megabytes. Decoding it again for a write costs
    less than the deep copy it replaces.
    """

    metadata: dict[str, Any]
    status: bytes

    def decode(self) -> Status:
        decoded: Status = json.loads(self.status)
        return decoded


def slim(body: dict[str, Any]) -> Cached:
    meta = body.get("metadata") or {}
    return Cached(
        metadata={k: meta[k] for k in _KEPT_METADATA if k in meta},
        status=json.dumps(body.get("status") or {}, separators=(",", ":")).encode(),
    )


def _older(new: dict[str, Any], cached: dict[str, Any]) -> bool:
    """True when ``new`` is an older version of the object than ``cached`` (same uid).

    resourceVersions are opaque by contract; the API server's are etcd revisions (integers),
    and only when both are integers are they compared.
    """
    if new.get("uid") != cached.get("uid"):
        return False
    a, b = str(new.get("resourceVersion", "")), str(cached.get("resourceVersion", ""))
    return a.isdigit() and b.isdigit() and int(a) < int(b)


async def wait_hold(hold: Callable[[], float] | None) -> None:
    """Wait as long as ``hold`` asks (the scheduler's ``hold_for``: a burst of fires is due)."""
    if hold is not None and (wait := hold()) > 0:
        await asyncio.sleep(wait)


class StatusWriter:
    """Coalesces status mutations of one custom resource kind."""

    def __init__(
        self,
        *,
        api: client.ApiClient,
        group: str,
        version: str,
        plural: str,
        interval: float,
        metrics: OperatorMetrics | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._api = kube.AsyncApi(api, connections=concurrency)
        self._group, self._version, self._plural = group, version, plural
        self._interval = interval
        self._metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        #: Writes begin their CPU part one per loop turn (see :meth:`_flush`).
        self._turnstile = asyncio.Lock()
        self._pending: dict[Key, _Pending] = {}
        self._cache: dict[Key, Cached] = {}
        self._last_flush: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self.patches = 0  # PATCH requests sent (benchmarks read it)
        #: Seconds to hold a write back now, asked before each one (the scheduler's
        #: :meth:`~kadence_operator.jobs.scheduler.Scheduler.hold_for`: a burst of fires is due).
        self.hold: Callable[[], float] | None = None

    def observe(self, body: dict[str, Any]) -> None:
        """Remember the newest body seen (from a watch event) to avoid a GET before a PATCH."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        cached = self._cache.get(key)
        if cached is not None and _older(meta, cached.metadata):
            return  # the event of a write older than the PATCH response we already hold
        # A stale entry only costs one 409 and a re-read.
        self._cache[key] = slim(body)

    def forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)
        self._last_flush.pop((namespace, name), None)

    def submit(
        self,
        namespace: str,
        name: str,
        mutation: Mutation,
        *,
        uid: str | None = None,
        supersede: str | None = None,
    ) -> asyncio.Future[None]:
        """Queue ``mutation``; the future resolves when persisted or raises :class:`ObjectGone`.

        ``uid`` pins the object: a mutation meant for a deleted Job never lands on a new Job that
        reuses the name. ``supersede`` tags a mutation that makes any earlier pending one with the
        same tag pointless (it sets the same fields from scratch, e.g. the next run time): the
        earlier one is dropped, and its future follows the new one's.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(namespace, name, mutation, future, uid=uid, supersede=supersede, guard=None)
        return future

    def post(
        self,
        namespace: str,
        name: str,
        mutation: Mutation,
        *,
        uid: str | None = None,
        supersede: str | None = None,
        guard: Guard | None = None,
    ) -> None:
        """:meth:`submit` for a caller that does not wait for the write.

        No future: the scheduler posts a few mutations per fire, and with a thousand fires a
        second the futures (and their callbacks) waiting for the next write of each Job were
        most of the objects the garbage collector had to walk. A mutation for a Job that is
        gone is dropped (logged at debug level); other failures are retried like any write.
        A ``guard`` decides before each write whether the mutation is written, held back or
        dropped (see the module).
        """
        self._queue(namespace, name, mutation, None, uid=uid, supersede=supersede, guard=guard)

    def _queue(
        self,
        namespace: str,
        name: str,
        mutation: Mutation,
        future: asyncio.Future[None] | None,
        *,
        uid: str | None,
        supersede: str | None,
        guard: Guard | None,
    ) -> None:
        key = (namespace, name)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        if supersede is not None:
            earlier = pending.tagged.get(supersede)
            if earlier is not None:
                try:
                    pending.mutations.remove(earlier)
                except ValueError:  # not pending any more: nothing to supersede
                    pass
                else:
                    if earlier[1] is not None:
                        if future is None:
                            future = earlier[1]  # the newer mutation resolves it
                        else:
                            future.add_done_callback(functools.partial(_follow, earlier[1]))
        queued: _Queued = (mutation, future, guard)
        if supersede is not None:
            pending.tagged[supersede] = queued
        pending.mutations.append(queued)
        if uid is not None:
            pending.uid = uid
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            due = [
                key
                for key in list(self._pending)
                if now - self._last_flush.get(key, 0.0) >= self._interval
            ]
            batch: list[asyncio.Future[None]] = []
            try:
                for key in due:
                    self._last_flush[key] = now
                    batch.append(asyncio.ensure_future(self._flush(key, self._pending.pop(key))))
                    # Start one write per loop turn: each begins with its CPU part (the
                    # mutations, the JSON), and fires and results waiting for the loop must not
                    # queue behind all of them at once.
                    await asyncio.sleep(0)
                if batch:
                    await asyncio.gather(*batch)
            except asyncio.CancelledError:
                for started in batch:
                    started.cancel()
                raise
            waits = [
                self._last_flush.get(key, 0.0) + self._interval - time.monotonic()
                for key in self._pending
            ]
            timeout = max(0.01, min(waits)) if waits else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        await self.flush_all()

    async def close(self) -> None:
        """Close the HTTP connections (after the last write; a later write reopens them)."""
        await self._api.close()

    async def flush_all(self) -> None:
        """Write everything pending now (shutdown, tests); what guards hold back is dropped."""
        while self._pending:
            await self.flush_keys(list(self._pending), final=True)

    async def flush_keys(self, keys: Iterable[Key], *, final: bool = False) -> None:
        """Write what is pending for ``keys`` now, interval or not (a shard is handed over).

        ``final``: drop what guards hold back, instead of keeping it for a later round."""
        batch = []
        now = time.monotonic()
        for key in keys:
            pending = self._pending.pop(key, None)
            if pending is not None:
                self._last_flush[key] = now
                batch.append(self._flush(key, pending, final=final))
        if batch:
            await asyncio.gather(*batch)

    async def _flush(self, key: Key, pending: _Pending, *, final: bool = False) -> None:
        try:
            async with self._slots:
                await wait_hold(self.hold)
                # Writes that waited for the same hold (or a free slot) wake in the same loop
                # turn; each then builds its PATCH (mutations, JSON, TLS): eight of them were one
                # 30-60 ms turn, which the replies to a burst's publishes waited behind. Through
                # the turnstile they begin one per turn.
                async with self._turnstile:
                    await asyncio.sleep(0)
                await self._write(key, pending)
        except ObjectGone as gone:
            for _, future, _ in pending.mutations:
                if future is not None and not future.done():
                    future.set_exception(ObjectGone(str(gone)))
            logger.debug("status write for %s/%s dropped: %s", *key, gone)
            self.forget(*key)
            return
        except Exception as error:  # API unreachable etc.: keep the mutations for the next round
            logger.warning("status write for %s/%s failed, will retry: %s", *key, error)
            self._requeue(key, pending)
            return
        held, dropped = pending.held, pending.dropped
        if held and final:
            held, dropped = [], dropped + held
        left_out = {id(queued) for queued in (*pending.held, *pending.dropped)}
        for queued in pending.mutations:
            future = queued[1]
            if id(queued) not in left_out and future is not None and not future.done():
                future.set_result(None)
        if dropped:
            logger.info(
                "%s/%s: dropped %d status change(s) decided while this replica held the Job's "
                "shard; the replica that holds it now decides those slots",
                *key,
                len(dropped),
            )
            for _, future, _ in dropped:
                if future is not None and not future.done():
                    future.set_exception(NotOwner(f"{key[0]}/{key[1]}: shard held elsewhere"))
        if held:
            self._requeue(key, _Pending(mutations=list(held), uid=pending.uid))

    def _requeue(self, key: Key, pending: _Pending) -> None:
        current = self._pending.get(key)
        if current is None:
            self._pending[key] = pending
        else:
            current.mutations[:0] = pending.mutations
        self._wake.set()

    def _patch_request(self, key: Key, cached: Cached, pending: _Pending) -> Status | None:
        """The PATCH body applying ``pending`` to ``cached`` (counted as sent); None if nothing
        changes."""
        uid = cached.metadata.get("uid")
        if pending.uid is not None and uid != pending.uid:
            raise ObjectGone(f"{key[0]}/{key[1]} was replaced (uid {uid})")
        old = cached.decode()
        new = cached.decode()
        pending.held, pending.dropped = [], []
        for queued in pending.mutations:
            mutation, _, guard = queued
            if guard is not None and (allowed := guard()) is not True:
                (pending.held if allowed is None else pending.dropped).append(queued)
                continue
            new = mutation(new)
        patch = merge_patch(old, new)
        if not patch:
            return None
        self.patches += 1
        if self._metrics is not None:
            self._metrics.status_patches.labels(self._plural, key[0]).inc()
        return {
            "metadata": {"resourceVersion": cached.metadata["resourceVersion"]},
            "status": patch,
        }

    def _path(self, key: Key, *, status: bool) -> str:
        path = f"/apis/{self._group}/{self._version}/namespaces/{key[0]}/{self._plural}/{key[1]}"
        return path + "/status" if status else path

    async def _get(self, key: Key) -> Cached:
        try:
            body = await self._api.get(self._path(key, status=False))
        except kube.HttpError as error:
            if error.status == 404:
                raise ObjectGone(f"{key[0]}/{key[1]} not found") from None
            raise
        cached = self._cache[key] = slim(body)
        return cached

    async def _write(self, key: Key, pending: _Pending) -> None:
        """Apply ``pending`` to the cached status and PATCH it, guarded by resourceVersion: a
        409 re-reads and applies the same mutations again, a 429 waits as told."""
        cached = self._cache.get(key) or await self._get(key)
        for _ in range(10):
            request = self._patch_request(key, cached, pending)
            if request is None:
                return
            try:
                result = await self._api.merge_patch(self._path(key, status=True), request)
            except kube.HttpError as error:
                if error.status == 409:
                    if self._metrics is not None:
                        self._metrics.status_conflicts.labels(self._plural).inc()
                    cached = await self._get(key)
                    continue
                if error.status == 404:
                    raise ObjectGone(f"{key[0]}/{key[1]} not found") from None
                if error.status == 429:
                    await asyncio.sleep(_retry_after(error.headers.get("Retry-After")))
                    cached = await self._get(key)
                    continue
                raise
            self._cache[key] = slim(result)
            return
        raise RuntimeError(f"status of {key[0]}/{key[1]} kept conflicting after 10 tries")
