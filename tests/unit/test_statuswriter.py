"""Table tests for the status writer's pure parts: the merge patch and the stale-event guard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kadence_operator.statuswriter import _older, merge_patch


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 1}, {}),
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {}, {"a": None}),  # removed keys are nulled
        ({"a": 1, "b": 2}, {"b": 2}, {"a": None}),
        # nested objects are diffed key by key
        ({"c": {"x": 1, "y": 2}}, {"c": {"x": 1, "y": 3}}, {"c": {"y": 3}}),
        ({"c": {"x": 1, "y": 2}}, {"c": {"x": 1}}, {"c": {"y": None}}),
        ({"c": {"x": 1}}, {"c": {"x": 1}}, {}),
        ({"c": {}}, {"c": {"x": 1}}, {"c": {"x": 1}}),
        # lists are replaced whole (JSON merge patch has no list diff)
        ({"runs": [1, 2]}, {"runs": [1, 2]}, {}),
        ({"runs": [1, 2]}, {"runs": [2, 1]}, {"runs": [2, 1]}),
        (
            {"runs": [{"id": "a"}]},
            {"runs": [{"id": "a"}, {"id": "b"}]},
            {"runs": [{"id": "a"}, {"id": "b"}]},
        ),
        # a type change is a replacement
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),
        # an explicit null in the new status is a value to write
        ({"a": 1}, {"a": None}, {"a": None}),
        ({}, {"a": None}, {"a": None}),
        (
            {"counters": {"dispatched": 3, "skipped": 0}, "nextRunTime": "T1"},
            {"counters": {"dispatched": 4, "skipped": 0}, "nextRunTime": "T2"},
            {"counters": {"dispatched": 4}, "nextRunTime": "T2"},
        ),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


def _apply(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge-patch application, to check that applying the patch gives ``new``."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _apply(result[key], value)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1, "b": {"c": [1], "d": "x"}}, {"b": {"c": [1, 2]}, "e": True}),
        ({"conditions": [{"type": "Ready"}]}, {"conditions": []}),
        ({"x": {"y": {"z": 1}}}, {"x": {"y": {}}}),
    ],
)
def test_merge_patch_round_trips(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert _apply(old, merge_patch(old, new)) == new


@pytest.mark.parametrize(
    ("new", "cached", "older"),
    [
        ({"uid": "u", "resourceVersion": "5"}, {"uid": "u", "resourceVersion": "7"}, True),
        ({"uid": "u", "resourceVersion": "7"}, {"uid": "u", "resourceVersion": "7"}, False),
        ({"uid": "u", "resourceVersion": "9"}, {"uid": "u", "resourceVersion": "7"}, False),
        # another object (re-created with the same name): never "older"
        ({"uid": "v", "resourceVersion": "5"}, {"uid": "u", "resourceVersion": "7"}, False),
        # opaque (non-integer) versions are not compared
        ({"uid": "u", "resourceVersion": "a5"}, {"uid": "u", "resourceVersion": "7"}, False),
        ({"uid": "u"}, {"uid": "u", "resourceVersion": "7"}, False),
    ],
)
def test_older(new: dict[str, Any], cached: dict[str, Any], older: bool) -> None:
    assert _older(new, cached) is older


async def test_a_superseding_mutation_replaces_the_pending_one_and_carries_its_future() -> None:
    from kubernetes import client

    from kadence_operator.statuswriter import StatusWriter

    writer = StatusWriter(
        api=client.ApiClient(), group="kadence.io", version="v1alpha1", plural="jobs", interval=5
    )

    def setter(value: int) -> Any:
        return lambda status: {**status, "nextRunTime": value}

    def counter(status: dict[str, Any]) -> dict[str, Any]:
        return {**status, "n": status.get("n", 0) + 1}

    first = writer.submit("ns", "job", setter(1), supersede="next-run")
    counted = writer.submit("ns", "job", counter)
    second = writer.submit("ns", "job", setter(2), supersede="next-run")
    other = writer.submit("ns", "other", setter(9), supersede="next-run")
    third = writer.submit("ns", "job", setter(3), supersede="next-run")
    pending = writer._pending[("ns", "job")]
    status: dict[str, Any] = {}
    for mutation, _, _ in pending.mutations:
        status = mutation(status)
    assert status == {"n": 1, "nextRunTime": 3}
    assert len(pending.mutations) == 2  # the counter and the last setter
    assert len(writer._pending[("ns", "other")].mutations) == 1  # tags are per object
    assert [f.done() for f in (first, second, third, counted, other)] == [False] * 5
    pending.mutations[-1][1].set_result(None)  # what a persisted write does
    for _ in range(3):  # each superseded future follows the next one, a loop turn each
        await asyncio.sleep(0)
    assert [f.done() for f in (first, second, third, counted)] == [True, True, True, False]
    failed = writer.submit("ns", "gone", setter(1), supersede="next-run")
    writer.submit("ns", "gone", setter(2), supersede="next-run")
    writer._pending[("ns", "gone")].mutations[-1][1].set_exception(RuntimeError("404"))
    for _ in range(2):
        await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="404"):
        failed.result()


async def test_posted_mutations_have_no_future_and_keep_a_superseded_ones() -> None:
    from kubernetes import client

    from kadence_operator.statuswriter import StatusWriter

    writer = StatusWriter(
        api=client.ApiClient(), group="kadence.io", version="v1alpha1", plural="jobs", interval=5
    )

    def setter(value: int) -> Any:
        return lambda status: {**status, "nextRunTime": value}

    writer.post("ns", "job", setter(1), supersede="next-run")
    waited = writer.submit("ns", "job", setter(2), supersede="next-run")
    writer.post("ns", "job", setter(3), supersede="next-run")
    writer.post("ns", "job", lambda status: {**status, "n": 1})
    pending = writer._pending[("ns", "job")]
    status: dict[str, Any] = {}
    for mutation, _, _ in pending.mutations:
        status = mutation(status)
    assert status == {"nextRunTime": 3, "n": 1}
    futures = [future for _, future, _ in pending.mutations]
    # The last setter took over the future its submitted predecessor's caller waits on.
    assert futures == [waited, None]
    assert not waited.done()


async def test_writes_released_by_one_hold_start_one_per_loop_turn() -> None:
    """Writes that waited for the same hold (a burst of fires) wake in the same loop turn; each
    builds its PATCH, a few milliseconds of CPU. They must not all do it in that one turn, where
    the replies to the burst's publishes would wait behind them."""
    import time

    from kubernetes import client

    from kadence_operator.statuswriter import StatusWriter, _Pending

    writer = StatusWriter(
        api=client.ApiClient(), group="kadence.io", version="v1alpha1", plural="jobs", interval=5
    )
    turn = [0]
    loop = asyncio.get_running_loop()

    def tick() -> None:
        turn[0] += 1
        loop.call_soon(tick)

    started: list[int] = []

    async def write(key: Any, pending: Any) -> None:
        started.append(turn[0])

    writer._write = write  # type: ignore[method-assign]
    until = time.monotonic() + 0.05
    writer.hold = lambda: max(0.0, until - time.monotonic())
    tick()
    await asyncio.gather(*(writer._flush(("ns", f"j{i}"), _Pending()) for i in range(8)))
    assert len(started) == 8
    assert len(set(started)) == 8  # one per turn
    assert started == sorted(started)


class _ApiServer:
    """Stands in for :class:`kadence_operator.kube.AsyncApi`: one object, merge PATCHes
    applied to its status (top-level keys are enough here), every PATCH kept."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {
            "metadata": {"namespace": "ns", "name": "job", "uid": "u", "resourceVersion": "1"},
            "status": {},
        }
        self.patches: list[dict[str, Any]] = []

    async def get(self, path: str) -> dict[str, Any]:
        return self.body

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body["status"])
        meta = self.body["metadata"]
        status = {**self.body["status"], **body["status"]}
        version = str(int(meta["resourceVersion"]) + 1)
        self.body = {"metadata": {**meta, "resourceVersion": version}, "status": status}
        return self.body


def _counting(field: str) -> Any:
    return lambda status: {**status, field: status.get(field, 0) + 1}


async def test_a_guard_writes_holds_back_or_drops_its_mutations() -> None:
    """The scheduler's decisions carry the shard's ownership as a guard: written while it
    holds the shard, held back while it does not know (its Lease ran out during an API-server
    outage), dropped once another replica holds the shard; results (unguarded) always go."""
    from kubernetes import client

    from kadence_operator.statuswriter import StatusWriter

    writer = StatusWriter(
        api=client.ApiClient(), group="kadence.io", version="v1alpha1", plural="jobs", interval=0
    )
    server = _ApiServer()
    writer._api = server  # type: ignore[assignment]
    key = ("ns", "job")
    owner: list[bool | None] = [None]

    def guard() -> bool | None:
        return owner[0]

    writer.post(*key, _counting("skipped"), guard=guard)
    folded = writer.submit(*key, _counting("succeeded"))
    await writer.flush_keys([key])
    assert server.patches == [{"succeeded": 1}]
    assert folded.done()
    assert len(writer._pending[key].mutations) == 1  # held back, not lost
    owner[0] = True  # the replica renewed its hold: the decision is written
    await writer.flush_keys([key])
    assert server.patches[-1] == {"skipped": 1}
    assert key not in writer._pending

    owner[0] = None
    writer.post(*key, _counting("skipped"), guard=guard)
    await writer.flush_keys([key])
    owner[0] = False  # another replica holds the shard now: it decides those slots
    await writer.flush_keys([key])
    assert key not in writer._pending
    assert server.body["status"] == {"succeeded": 1, "skipped": 1}

    writer.post(*key, _counting("skipped"), guard=lambda: None)
    await writer.flush_all()  # shutting down: what cannot be written now is dropped
    assert key not in writer._pending
    assert server.body["status"] == {"succeeded": 1, "skipped": 1}
