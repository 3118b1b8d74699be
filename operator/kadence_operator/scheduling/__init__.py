"""The pure scheduling core: everything Kadence decides about time, with no I/O.

No kopf, Kubernetes, NATS or object-store imports (an import-linter contract enforces it) and no
clock reads: callers pass ``now``/``after`` in, so every function is a deterministic function of
its arguments and every replica agrees.

* :mod:`.schedule`: the :class:`Schedule` input (interval or cron, time zone, bounds, jitter,
  spread), validated on construction.
* :mod:`.timing`: slots (anchoring, DST, bounds), backfill.
* :mod:`.dispatch`: when a slot is published: spread and jitter delays.
* :mod:`.policy`: catch-up after an outage, overlap with active runs.
* :mod:`.runids`: deterministic, DNS-label-safe run ids (NATS ``Nats-Msg-Id``).
* :mod:`.sharding`: which operator shard owns a Job.

This is a purely computational package with no side-effects.
"""

from kadence_operator.scheduling.dispatch import (
    CRON_SECONDS_SPREAD_SPAN,
    CRON_SPREAD_SPAN,
    dispatch_delay,
    dispatch_time,
    jitter_delay,
    spread_offset,
    spread_span,
)
from kadence_operator.scheduling.policy import (
    DEFAULT_GRACE,
    MAX_CATCH_UP,
    MISSED_COUNT_LIMIT,
    CatchUpDecision,
    CatchUpPolicy,
    ConcurrencyPolicy,
    OverlapAction,
    OverlapDecision,
    PlannedSlot,
    decide_overlap,
    plan_catch_up,
    plan_slot,
    runs_alone,
    runs_alone_during,
)
from kadence_operator.scheduling.runids import run_id_for_slot, run_id_for_trigger
from kadence_operator.scheduling.schedule import CRON_ALIASES, Schedule, ScheduleError, Spread
from kadence_operator.scheduling.sharding import jump_consistent_hash, shard_for
from kadence_operator.scheduling.timing import (
    DEFAULT_BACKFILL_CAP,
    EPOCH,
    backfill_slots,
    count_fire_times,
    fire_times_between,
    interval_anchor,
    latest_fire_times,
    next_fire_time,
    next_fire_times,
    previous_fire_time,
)

__all__ = [
    "CRON_ALIASES",
    "CRON_SECONDS_SPREAD_SPAN",
    "CRON_SPREAD_SPAN",
    "DEFAULT_BACKFILL_CAP",
    "DEFAULT_GRACE",
    "EPOCH",
    "MAX_CATCH_UP",
    "MISSED_COUNT_LIMIT",
    "CatchUpDecision",
    "CatchUpPolicy",
    "ConcurrencyPolicy",
    "OverlapAction",
    "OverlapDecision",
    "PlannedSlot",
    "Schedule",
    "ScheduleError",
    "Spread",
    "backfill_slots",
    "count_fire_times",
    "decide_overlap",
    "dispatch_delay",
    "dispatch_time",
    "fire_times_between",
    "interval_anchor",
    "jitter_delay",
    "jump_consistent_hash",
    "latest_fire_times",
    "next_fire_time",
    "next_fire_times",
    "plan_catch_up",
    "plan_slot",
    "previous_fire_time",
    "run_id_for_slot",
    "run_id_for_trigger",
    "runs_alone",
    "runs_alone_during",
    "shard_for",
    "spread_offset",
    "spread_span",
]
