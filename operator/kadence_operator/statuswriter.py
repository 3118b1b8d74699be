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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

Status = dict[str, Any]
Mutation = Callable[[Status], Status]
Key = tuple[str, str]  # (namespace, name)


class ObjectGone(Exception):
    """The object was deleted (or replaced by a new one with another uid) before the write."""


@dataclass
class _Pending:
    mutations: list[tuple[Mutation, asyncio.Future[None]]] = field(default_factory=list)
    uid: str | None = None


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
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self._group, self._version, self._plural = group, version, plural
        self._interval = interval
        self._pending: dict[Key, _Pending] = {}
        self._cache: dict[Key, dict[str, Any]] = {}
        self._last_flush: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self.patches = 0  # PATCH requests sent (benchmarks read it)

    def observe(self, body: dict[str, Any]) -> None:
        """Remember the newest body seen (from a watch event) to avoid a GET before a PATCH."""
        meta = body.get("metadata", {})
        # Watch events arrive in order; a stale entry only costs one 409 and a re-read.
        self._cache[(meta.get("namespace", ""), meta.get("name", ""))] = body

    def forget(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)
        self._last_flush.pop((namespace, name), None)

    def submit(
        self, namespace: str, name: str, mutation: Mutation, *, uid: str | None = None
    ) -> asyncio.Future[None]:
        """Queue ``mutation``; the future resolves when persisted or raises :class:`ObjectGone`.

        ``uid`` pins the object: a mutation meant for a deleted Job never lands on a new Job that
        reuses the name.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending.setdefault((namespace, name), _Pending())
        pending.mutations.append((mutation, future))
        if uid is not None:
            pending.uid = uid
        self._wake.set()
        return future

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            due = [
                key
                for key in list(self._pending)
                if now - self._last_flush.get(key, 0.0) >= self._interval
            ]
            for key in due:
                pending = self._pending.pop(key)
                self._last_flush[key] = now
                await self._flush(key, pending)
            waits = [
                self._last_flush.get(key, 0.0) + self._interval - time.monotonic()
                for key in self._pending
            ]
            timeout = max(0.01, min(waits)) if waits else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        await self.flush_all()

    async def flush_all(self) -> None:
        """Write everything pending now (shutdown, tests)."""
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            del self._pending[key]
            await self._flush(key, pending)

    async def _flush(self, key: Key, pending: _Pending) -> None:
        try:
            await asyncio.to_thread(self._write, key, pending)
        except ObjectGone as gone:
            for _, future in pending.mutations:
                if not future.done():
                    future.set_exception(ObjectGone(str(gone)))
            self.forget(*key)
            return
        except Exception as error:  # API unreachable etc.: keep the mutations for the next round
            logger.warning("status write for %s/%s failed, will retry: %s", *key, error)
            self._requeue(key, pending)
            return
        for _, future in pending.mutations:
            if not future.done():
                future.set_result(None)

    def _requeue(self, key: Key, pending: _Pending) -> None:
        current = self._pending.get(key)
        if current is None:
            self._pending[key] = pending
        else:
            current.mutations[:0] = pending.mutations
        self._wake.set()

    def _get(self, key: Key) -> dict[str, Any]:
        try:
            body: dict[str, Any] = self._api.get_namespaced_custom_object(  # type: ignore[assignment]
                self._group, self._version, key[0], self._plural, key[1]
            )
        except ApiException as error:
            if error.status == 404:
                raise ObjectGone(f"{key[0]}/{key[1]} not found") from None
            raise
        self._cache[key] = body
        return body

    def _write(self, key: Key, pending: _Pending) -> None:
        body = self._cache.get(key) or self._get(key)
        for _ in range(10):
            uid = body.get("metadata", {}).get("uid")
            if pending.uid is not None and uid != pending.uid:
                raise ObjectGone(f"{key[0]}/{key[1]} was replaced (uid {uid})")
            old = copy.deepcopy(body.get("status") or {})
            new = copy.deepcopy(old)
            for mutation, _ in pending.mutations:
                new = mutation(new)
            patch = merge_patch(old, new)
            if not patch:
                return
            request = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": patch,
            }
            try:
                self.patches += 1
                result: dict[str, Any] = self._api.patch_namespaced_custom_object_status(  # type: ignore[assignment]
                    self._group, self._version, key[0], self._plural, key[1], request
                )
                self._cache[key] = result
                return
            except ApiException as error:
                if error.status == 409:
                    body = self._get(key)
                    continue
                if error.status == 404:
                    raise ObjectGone(f"{key[0]}/{key[1]} not found") from None
                if error.status == 429:
                    retry_after = (error.headers or {}).get("Retry-After", "1")
                    time.sleep(min(10.0, float(retry_after) if retry_after.isdigit() else 1.0))
                    body = self._get(key)
                    continue
                raise
        raise RuntimeError(f"status of {key[0]}/{key[1]} kept conflicting after 10 tries")
