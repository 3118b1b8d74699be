"""A run's concurrency slot: freed when its handler ends, within the settle limit, exactly once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from kadence.settling import Slot
from kadence.slots import Slots


def settler(capacity: int, settle_limit: int) -> Any:
    return SimpleNamespace(
        slots=Slots(capacity), settling=0, settle_limit=settle_limit, abandoned=0
    )


async def test_a_finished_run_frees_its_slot_before_it_is_settled() -> None:
    s = settler(capacity=2, settle_limit=4)
    assert await s.slots.take(2) == 2
    slot = Slot(cast(Any, s))
    slot.free_early()
    assert (s.slots.free, s.settling, slot.held) == (1, 1, False)
    slot.settled()  # report and ack done: no second give
    assert (s.slots.free, s.settling) == (1, 0)


async def test_past_the_settle_limit_a_run_keeps_its_slot_until_settled() -> None:
    s = settler(capacity=2, settle_limit=1)
    assert await s.slots.take(2) == 2
    first, second = Slot(cast(Any, s)), Slot(cast(Any, s))
    first.free_early()
    second.free_early()  # one run settles without a slot already
    assert (s.slots.free, s.settling, second.held) == (1, 1, True)
    second.settled()
    first.settled()
    assert (s.slots.free, s.settling) == (2, 0)


async def test_a_settle_limit_of_zero_never_frees_early() -> None:
    s = settler(capacity=1, settle_limit=0)
    assert await s.slots.take(1) == 1
    slot = Slot(cast(Any, s))
    slot.free_early()
    assert (s.slots.free, slot.held) == (0, True)
    slot.settled()
    slot.settled()  # given back once only
    assert s.slots.free == 1


async def test_an_abandoned_sync_handler_keeps_its_slot_until_its_thread_returns() -> None:
    s = settler(capacity=1, settle_limit=4)
    assert await s.slots.take(1) == 1
    thread: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    slot = Slot(cast(Any, s))
    slot.keep_for(thread)
    slot.free_early()  # not while its thread runs
    assert (s.slots.free, s.settling, slot.held) == (0, 0, True)
    slot.settled()  # reported and put back, but the thread still runs
    assert (s.slots.free, s.abandoned) == (0, 1)
    thread.set_result(None)
    await asyncio.sleep(0)  # done callbacks run on the loop
    assert (s.slots.free, s.abandoned) == (1, 0)
    slot.settled()
    assert s.slots.free == 1
