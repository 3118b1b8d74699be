"""Run ids of ``kadence_operator.scheduling.runids``.

Pinned values, computed outside the code under test with coreutils:

    uid=3f1e9d2a-5b7c-4e8f-9a10-1b2c3d4e5f60
    printf 'kadence/run/slot/v1\\0%s\\0%s' $uid 2026-03-29T01:00:00.000000Z | sha256sum
        -> e81cf7bfe90f8d120f50...
    printf 'kadence/run/trigger/v1\\0%s\\0%s' $uid manual-2026-01-01 | sha256sum
        -> 8c62fe1efdb0f1fcaa1b...

Run ids are NATS message ids (dedupe keys): these must never change between releases.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kadence_operator.scheduling import (
    Schedule,
    backfill_slots,
    next_fire_time,
    run_id_for_slot,
    run_id_for_trigger,
)

UID = "3f1e9d2a-5b7c-4e8f-9a10-1b2c3d4e5f60"
OTHER_UID = "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
SLOT = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


# (function, args, expected)
PINNED_CASES = [
    pytest.param(run_id_for_slot, (UID, SLOT), "s-e81cf7bfe90f8d120f50", id="slot-utc"),
    # 03:00 CEST on 2026-03-29 is the same instant as 01:00Z.
    pytest.param(
        run_id_for_slot,
        (UID, datetime(2026, 3, 29, 3, 0, tzinfo=ZoneInfo("Europe/Berlin"))),
        "s-e81cf7bfe90f8d120f50",
        id="slot-other-time-zone",
    ),
    pytest.param(
        run_id_for_trigger, (UID, "manual-2026-01-01"), "t-8c62fe1efdb0f1fcaa1b", id="trigger"
    ),
]


@pytest.mark.parametrize(("function", "args", "expected"), PINNED_CASES)
def test_run_ids_are_pinned(function: object, args: tuple[str, object], expected: str) -> None:
    assert callable(function)
    assert function(*args) == expected


@pytest.mark.parametrize(
    "run_id",
    [
        run_id_for_slot(UID, SLOT),
        run_id_for_slot("", SLOT),
        run_id_for_trigger(UID, ""),
        run_id_for_trigger(UID, "Ünïcode / spaces and UPPER"),
    ],
)
def test_run_ids_are_short_dns_labels(run_id: str) -> None:
    assert len(run_id) == 22
    assert DNS_LABEL.match(run_id)
    assert re.fullmatch(r"[st]-[0-9a-f]{20}", run_id)


def test_run_ids_distinguish_inputs() -> None:
    ids = {
        run_id_for_slot(UID, SLOT),
        run_id_for_slot(OTHER_UID, SLOT),
        run_id_for_slot(UID, SLOT + timedelta(microseconds=1)),
        run_id_for_slot(UID, SLOT + timedelta(hours=1)),
        run_id_for_trigger(UID, "2026-03-29T01:00:00.000000Z"),
        run_id_for_trigger(OTHER_UID, "2026-03-29T01:00:00.000000Z"),
        run_id_for_trigger(UID, "a"),
    }
    assert len(ids) == 7


def test_many_slots_do_not_collide() -> None:
    slots = [SLOT + timedelta(seconds=k) for k in range(20_000)]
    assert len({run_id_for_slot(UID, s) for s in slots}) == len(slots)


def test_backfill_of_a_scheduled_slot_dedupes() -> None:
    schedule = Schedule(cron="0 * * * *")
    scheduled = next_fire_time(schedule, after=SLOT - timedelta(minutes=30))
    assert scheduled is not None
    backfilled = backfill_slots(schedule, from_=SLOT - timedelta(hours=2), to=SLOT)
    assert run_id_for_slot(UID, scheduled) == run_id_for_slot(UID, backfilled[-1])


def test_naive_slot_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_id_for_slot(UID, datetime(2026, 1, 1))
