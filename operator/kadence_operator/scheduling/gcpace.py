"""When the operator collects its garbage (pure): between bursts of fires, not in them.

CPython collects a generation when its count passes its threshold, wherever that happens: at a
thousand fires a second the operator's young generation fills about once a second, and a
collection (5-80 ms, a middle-generation one up to 0.3 s) started while a burst was being
written made that burst's runs late by as much (docs/benchmarks.md). With automatic collection
off, the operator's pacer (:mod:`kadence_operator.gcpacer`) asks this module each tick:

* :func:`due_generation` -- the generation CPython would collect now, by CPython's own rule;
* :func:`decide` -- whether to collect it now: when the scheduler has a quiet window long enough
  for it (its recent duration with a margin), or at once when its count has passed
  :data:`FORCE` times its threshold, so memory stays bounded however busy the schedule is.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

#: A generation is collected even in a busy moment once its count is this many times its
#: threshold (CPython would have collected it at 1x).
FORCE = 4
#: A collection needs a quiet window this many times its expected duration.
MARGIN = 2.0
#: Expected durations, seconds, before any collection of a generation was measured. A full
#: collection of the operator with 1,000 Jobs blocked it for 0.5-1 s in the benchmark.
PRIOR = (0.03, 0.15, 1.0)


class Reason(enum.Enum):
    PACED = "paced"  # in a quiet window
    FORCED = "forced"  # past FORCE x its threshold


def due_generation(
    counts: Sequence[int], thresholds: Sequence[int], *, pending: int, total: int
) -> int | None:
    """The generation CPython's automatic collection would collect now (None: none).

    The oldest generation whose count exceeds its threshold; the oldest one only when the
    objects that entered it since its last collection (``pending``) are at least a quarter of
    those that survived that collection (``total``), as CPython does, so a full collection
    stays rare when most old objects live long (``gc_collect_generations`` in gcmodule.c).
    """
    oldest = len(thresholds) - 1
    for generation in range(oldest, -1, -1):
        if thresholds[generation] <= 0 or counts[generation] <= thresholds[generation]:
            continue
        if generation == oldest and pending < total // 4:
            continue
        return generation
    return None


def decide(
    generation: int | None,
    counts: Sequence[int],
    thresholds: Sequence[int],
    *,
    expected: float,
    quiet: float,
) -> Reason | None:
    """Whether to collect ``generation`` now: ``expected`` is how long it is likely to take,
    ``quiet`` how long the scheduler has nothing urgent (seconds; 0 when busy now)."""
    if generation is None:
        return None
    if counts[generation] > FORCE * thresholds[generation]:
        return Reason.FORCED
    if expected * MARGIN <= quiet:
        return Reason.PACED
    return None
