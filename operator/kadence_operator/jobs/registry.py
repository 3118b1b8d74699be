"""The Jobs a replica knows and when each is next due: the scheduler's registry.

Every valid Job is an :class:`~kadence_operator.jobs.entry.Entry` in a dict and an item in a heap
keyed by its next due time, so 10,000 idle Jobs cost a heap and a dict. Watch events come in
through :meth:`Jobs.upsert` and :meth:`Jobs.refresh`; a Job is pushed to the front of the heap
only when something that matters changed. The scheduler's loop (:mod:`.scheduler`) pops what is
due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kadence_operator import scheduling
from kadence_operator.api import TRIGGER_ANNOTATION, JobSpec
from kadence_operator.jobs.entry import Entry, Key, parse_time
from kadence_operator.jobs.runs import schedule_of
from kadence_operator.scheduling.bursts import BurstWatch


@dataclass(order=True, slots=True)
class Due:
    """A Job due at ``at`` (stale once the Job was pushed again: ``version`` differs)."""

    at: datetime
    seq: int
    key: Key = field(compare=False)
    version: int = field(compare=False)


class Jobs:
    """The valid Jobs of this replica (all shards) and the heap of their due times."""

    def __init__(
        self,
        *,
        shards: int,
        stage_size: int,
        bursts: BurstWatch,
        clock: Callable[[], datetime],
    ) -> None:
        self._shards = shards
        self._stage_size = stage_size
        self._clock = clock
        self.entries: dict[Key, Entry] = {}
        self.heap: list[Due] = []
        #: Fires due per 10 ms, to keep background work out of the way of bursts.
        self.bursts = bursts
        #: Set when the loop should look at the heap again (an earlier item, a big group).
        self.wake = asyncio.Event()
        self._seq = itertools.count()

    def refresh(self, body: dict[str, Any]) -> bool:
        """Take in a watch event of a known Job whose spec did not change (same uid and
        generation): only its status and annotations are read, the spec is not parsed again.
        False when the Job is unknown or has a new generation: call :meth:`upsert`.
        """
        meta = body["metadata"]
        entry = self.entries.get((meta["namespace"], meta["name"]))
        if (
            entry is None
            or entry.uid != meta["uid"]
            or entry.generation != int(meta.get("generation") or 0)
        ):
            return False
        self.observe(entry, body)
        return True

    def upsert(self, body: dict[str, Any], spec: JobSpec) -> None:
        """Register or refresh a valid Job from its body (called on every watch event).

        A Job is looked at again at once only when something that matters changed (a new Job or
        generation, a new trigger value, a buffered slot that may now run); otherwise it keeps
        its place in the heap, so the watch events of the operator's own status writes cost no
        fire.
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        uid = meta["uid"]
        generation = int(meta.get("generation") or 0)
        entry = self.entries.get(key)
        wake = False
        if entry is None or entry.uid != uid:
            if entry is not None:
                entry.stamp += 1  # replaced: a fire of the old one staged must not go out
            created = parse_time(meta.get("creationTimestamp")) or self._clock()
            entry = Entry(
                namespace=key[0],
                name=key[1],
                uid=uid,
                generation=generation,
                created=created,
                spec_json=b"",
                schedule=schedule_of(spec, created=created),
                shard=scheduling.shard_for(uid, self._shards),
            )
            entry.derive(spec)
            self.entries[key] = entry
            wake = True
        elif generation != entry.generation:
            entry.generation = generation
            entry.schedule = schedule_of(spec, created=entry.created)
            entry.ready_written = False
            entry.queue_problem = None
            entry.derive(spec)
            wake = True
        self.observe(entry, body, wake=wake)

    def observe(self, entry: Entry, body: dict[str, Any], *, wake: bool = False) -> None:
        entry.stamp += 1
        trigger = (body["metadata"].get("annotations") or {}).get(TRIGGER_ANNOTATION)
        if trigger != entry.trigger:
            entry.trigger = trigger
            wake = wake or bool(trigger)
        entry.observe_status(body.get("status") or {}, time.monotonic())
        if entry.buffered is not None and entry.active == 0:
            wake = True
        if wake:
            self.wake_entry(entry)

    def remove(self, namespace: str, name: str) -> None:
        entry = self.entries.pop((namespace, name), None)
        if entry is not None:
            entry.stamp += 1

    def __len__(self) -> int:
        return len(self.entries)

    def note_finished(self, namespace: str, name: str, run_id: str | None = None) -> None:
        """A final result of a run of this Job was persisted: it is no longer active."""
        entry = self.entries.get((namespace, name))
        if entry is None:
            return
        if run_id is None:  # an unknown run: count one fewer
            active = sorted(entry.active_runs())
            run_id = active[0] if active else None
        if run_id is not None:
            entry.sent.pop(run_id, None)
            entry.ended[run_id] = time.monotonic()
        if entry.buffered is not None and entry.active == 0:
            self.wake_entry(entry)  # BufferOne: the pending slot runs now

    def push(self, entry: Entry, at: datetime) -> None:
        entry.version = next(self._seq)
        # The loop sleeps until the earliest item: only an earlier one needs to wake it (each
        # fire pushes its Job again, and a wake-up per fire cost a loop turn each).
        earlier = not self.heap or at < self.heap[0].at
        heapq.heappush(self.heap, Due(at, entry.version, entry.key, entry.version))
        due = at.timestamp()
        self.bursts.add(due)
        # So does a group that just became big enough to be staged (see _next_wake).
        if earlier or self.bursts.due_at(due) == self._stage_size:
            self.wake.set()

    def wake_entry(self, entry: Entry) -> None:
        """Fire ``entry`` as soon as possible (after the fire in progress, if any)."""
        if entry.firing:
            entry.refire = True
        else:
            self.push(entry, self._clock())
