"""A run's concurrency slot: freed when its handler ends, within the settle limit, exactly once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from kadence.runtime import _Slot
from kadence.slots import Slots


def worker(capacity: int, settle_limit: int) -> Any:
    return SimpleNamespace(_slots=Slots(capacity), _settling=0, settle_limit=settle_limit)


async def test_a_finished_run_frees_its_slot_before_it_is_settled() -> None:
    w = worker(capacity=2, settle_limit=4)
    assert await w._slots.take(2) == 2
    slot = _Slot(cast(Any, w))
    slot.free_early()
    assert (w._slots.free, w._settling, slot.held) == (1, 1, False)
    slot.settled()  # report and ack done: no second give
    assert (w._slots.free, w._settling) == (1, 0)


async def test_past_the_settle_limit_a_run_keeps_its_slot_until_settled() -> None:
    w = worker(capacity=2, settle_limit=1)
    assert await w._slots.take(2) == 2
    first, second = _Slot(cast(Any, w)), _Slot(cast(Any, w))
    first.free_early()
    second.free_early()  # one run settles without a slot already
    assert (w._slots.free, w._settling, second.held) == (1, 1, True)
    second.settled()
    first.settled()
    assert (w._slots.free, w._settling) == (2, 0)


async def test_a_settle_limit_of_zero_never_frees_early() -> None:
    w = worker(capacity=1, settle_limit=0)
    assert await w._slots.take(1) == 1
    slot = _Slot(cast(Any, w))
    slot.free_early()
    assert (w._slots.free, slot.held) == (0, True)
    slot.settled()
    slot.settled()  # given back once only
    assert w._slots.free == 1
